// A TCP client in a few lines: connects, sends one line, prints the reply, exits.
//   tcp_client HOST:PORT [TEXT]   (TEXT defaults to "hello")
// Prints "reply: TEXT" and exits 0 when the whole line has come back (from an echo server such
// as tcp_server); exits 1 when the connection fails or no reply comes within 5 seconds.
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <cstdio>
#include <string>

using namespace pipeworks;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    if (argc < 2) return std::fprintf(stderr, "usage: tcp_client HOST:PORT [TEXT]\n"), 2;
    const std::string text = argc > 2 ? argv[2] : "hello";

    Loop loop;
    NetConf conf;
    conf.framer = Framer::lines();  // send() adds the "\n"; a message is a line without it
    auto client = Pipe::connect(loop, argv[1], conf);
    if (!client) return std::fprintf(stderr, "%s\n", client.error().message.c_str()), 2;

    int status = 1;
    Timer deadline = loop.call_later(5s, [&] {
        std::fprintf(stderr, "tcp_client: no reply within 5 s\n");
        (*client)->close();
    });
    (*client)->on_message([&](Pipe& c, const Message& m) {
        std::printf("reply: %.*s\n", static_cast<int>(m.data.size()), m.data.data());
        status = 0;
        deadline.cancel();
        c.close();
    });
    (*client)->on_end([&](Pipe&, const EndInfo& end) {
        deadline.cancel();
        if (end.error) std::fprintf(stderr, "tcp_client: %s\n", end.error.message.c_str());
    });
    // Queued now, sent as soon as the connection is up.
    if (Error e = (*client)->send(text)) return std::fprintf(stderr, "%s\n", e.message.c_str()), 1;
    loop.run();
    return status;
}
