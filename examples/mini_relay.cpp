// A TCP relay in 20 lines: every client of LISTEN gets its own connection to TARGET, and the
// two pipes are linked both ways (backpressure and half-close included). pipeworks-relay is
// the full tool.   mini_relay LISTEN TARGET   e.g. mini_relay 127.0.0.1:0 127.0.0.1:8080
// Prints "listening on HOST:PORT"; runs until killed.
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <cstdio>

using namespace pipeworks;

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    if (argc != 3) return std::fprintf(stderr, "usage: mini_relay LISTEN TARGET\n"), 2;
    auto listen_at = Address::parse(argv[1]), target = Address::parse(argv[2]);
    if (!listen_at || !target) return std::fprintf(stderr, "mini_relay: bad address\n"), 2;
    Loop loop;
    auto server = Pipe::listen(loop, *listen_at);
    if (!server) return std::fprintf(stderr, "%s\n", server.error().message.c_str()), 1;
    (*server)->on_accept([&](Pipe&, const PipePtr& client) {
        auto up = Pipe::connect(loop, *target);
        if (!up || Pipe::relay(client, *up)) client->close();
    });
    std::printf("listening on %s\n", (*server)->local_address().to_string().c_str());
    std::fflush(stdout);
    loop.run();
}
