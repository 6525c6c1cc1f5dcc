// A TCP server in a few lines: echoes every byte back to the client that sent it.
//   tcp_server [HOST:PORT]   (default 127.0.0.1:0: a port the OS picks)
// Prints "listening on HOST:PORT", then a line per client that connects or goes; SIGINT or
// SIGTERM stops it.
#include "stop_signals.hpp"
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <csignal>
#include <cstdio>

using namespace pipeworks;

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    auto at = Address::parse(argc > 1 ? argv[1] : "127.0.0.1:0");
    if (!at) return std::fprintf(stderr, "%s\n", at.error().message.c_str()), 2;
    Loop loop;
    auto server = Pipe::listen(loop, *at);
    if (!server) return std::fprintf(stderr, "%s\n", server.error().message.c_str()), 1;

    // Accepted pipes get copies of the server's callbacks.
    (*server)->on_message([](Pipe& client, const Message& m) { (void)client.send(m.data); });
    (*server)->on_accept([](Pipe&, const PipePtr& client) {
        std::printf("client %s connected\n", client->peer_address().to_string().c_str());
        std::fflush(stdout);
        client->on_end([](Pipe& c, const EndInfo& end) {
            std::printf("client %s gone: %s\n", c.peer_address().to_string().c_str(),
                        to_string(end.reason));
            std::fflush(stdout);
        });
    });
    auto stop = [&](int) { (*server)->close(); };
    SignalWatch on_int = loop.on_signal(SIGINT, stop);
    SignalWatch on_term = loop.on_signal(SIGTERM, stop);

    std::printf("listening on %s\n", (*server)->local_address().to_string().c_str());
    std::fflush(stdout);
    loop.run();
    hold_stop_signals();
    return 0;
}
