// A program built against an installed pipeworks with CMake (find_package(pipeworks), the
// target pipeworks::pipeworks). It echoes one line over TCP on the loopback interface, from a
// client to a server of its own and back, and prints "consumer ok" once the line has come back.
#include <pipeworks/pipeworks.hpp>

#include <chrono>
#include <cstdio>
#include <string>

using namespace pipeworks;
using namespace std::chrono_literals;

int main() {
    Loop loop;
    auto server = Pipe::listen(loop, Address::loopback(Family::ipv4));
    if (!server)
        return std::fprintf(stderr, "consumer: listen: %s\n", server.error().message.c_str()), 1;
    (*server)->on_message([](Pipe& accepted, const Message& m) { (void)accepted.send(m.data); });

    auto client = Pipe::connect(loop, (*server)->local_address());
    if (!client)
        return std::fprintf(stderr, "consumer: connect: %s\n", client.error().message.c_str()), 1;
    const std::string line =
        "hello from a CMake consumer of pipeworks " PIPEWORKS_VERSION_STRING "\n";
    std::string echoed;
    (*client)->on_message([&](Pipe&, const Message& m) { echoed += m.data; });
    if (Error e = (*client)->send(line))
        return std::fprintf(stderr, "consumer: send: %s\n", e.message.c_str()), 1;

    if (!loop.run_until([&] { return echoed.size() >= line.size(); }, 5000ms) || echoed != line) {
        std::fprintf(stderr, "consumer: the line did not come back (got \"%s\")\n", echoed.c_str());
        return 1;
    }
    (*client)->close();
    (*server)->close();
    loop.run_until([&] { return (*client)->ended() && (*server)->ended(); }, 2000ms);
    std::printf("consumer ok (pipeworks %s)\n", version());
    return 0;
}
