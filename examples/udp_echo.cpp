// UDP in a few lines: an echo pipe answers each datagram to the address it came from, and a
// client pipe with a default destination sends three and prints the replies.
// Prints "reply N: TEXT from HOST:PORT" for N = 1..3, then exits 0 (1 if a reply is missing
// after 2 seconds).
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <cstdio>
#include <string>

using namespace pipeworks;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    Loop loop;
    auto echo = Pipe::udp(loop, Address::loopback(Family::ipv4));  // the OS picks the port
    if (!echo) return std::fprintf(stderr, "%s\n", echo.error().message.c_str()), 1;
    (*echo)->on_message([](Pipe& p, const Message& m) { (void)p.send_to(m.data, m.from); });

    // No local address: any address of the destination's family, a port from the OS.
    auto client = Pipe::udp(loop, {}, (*echo)->local_address());
    if (!client) return std::fprintf(stderr, "%s\n", client.error().message.c_str()), 1;
    int replies = 0;
    (*client)->on_message([&](Pipe&, const Message& m) {
        std::printf("reply %d: %.*s from %s\n", ++replies, static_cast<int>(m.data.size()),
                    m.data.data(), m.from.to_string().c_str());
    });
    for (const char* text : {"one", "two", "three"})
        if (Error e = (*client)->send(text))
            return std::fprintf(stderr, "%s\n", e.message.c_str()), 1;

    const bool all = loop.run_until([&] { return replies == 3; }, 2s);
    (*client)->close();
    (*echo)->close();
    loop.run();
    return all ? 0 : 1;
}
