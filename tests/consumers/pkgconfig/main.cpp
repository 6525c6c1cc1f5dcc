// A program built against an installed pipeworks, with the flags pkg-config gives for it:
//   g++ -std=c++20 main.cpp $(pkg-config --cflags --libs pipeworks)
// It sends one UDP datagram to itself over the loopback interface and prints "consumer ok" once
// it has come back.
#include <pipeworks/pipeworks.hpp>

#include <chrono>
#include <cstdio>
#include <string>

int main() {
    using namespace std::chrono_literals;
    pipeworks::Loop loop;

    auto parsed = pipeworks::Address::parse("127.0.0.1:9");
    if (!parsed || parsed->port() != 9 || !parsed->is_loopback()) {
        std::fprintf(stderr, "consumer: Address::parse failed: %s\n",
                     parsed.error().message.c_str());
        return 1;
    }

    auto opened = pipeworks::Pipe::udp(loop, pipeworks::Address::loopback(pipeworks::Family::ipv4), {}, {});
    if (!opened) {
        std::fprintf(stderr, "consumer: Pipe::udp failed: %s\n", opened.error().message.c_str());
        return 1;
    }
    pipeworks::PipePtr pipe = *opened;

    const std::string payload = "hello from a consumer";
    std::string received;
    pipe->on_message([&](pipeworks::Pipe&, const pipeworks::Message& m) { received = m.data; });

    if (auto err = pipe->send_to(payload, pipe->local_address())) {
        std::fprintf(stderr, "consumer: send_to failed: %s\n", err.message.c_str());
        return 1;
    }
    if (!loop.run_until([&] { return !received.empty(); }, 5000ms) || received != payload) {
        std::fprintf(stderr, "consumer: the datagram did not come back (got \"%s\")\n",
                     received.c_str());
        return 1;
    }

    pipe->close();
    loop.run_until([&] { return pipe->ended(); }, 2000ms);
    std::printf("consumer ok\n");
    return 0;
}
