// accept() in a few lines: a TCP server with no accept callback hands out its connections one
// accept() at a time, each with a timeout, the way a blocking accept() loop reads.
// Prints "accepted N from HOST:PORT" for two clients, then "no client in 200 ms".
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <cstdio>
#include <functional>
#include <vector>

using namespace pipeworks;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    Loop loop;
    auto server = Pipe::listen(loop, Address::loopback(Family::ipv4)).value();
    std::vector<PipePtr> clients;
    for (int i = 0; i < 2; ++i)
        clients.push_back(Pipe::connect(loop, server->local_address()).value());

    int accepted = 0;
    std::function<void()> next = [&] {
        server->accept(200ms, [&](Pipe&, AcceptResult& r) {
            if (!r) {
                std::printf("no client in 200 ms\n");
                for (auto& c : clients) c->close();
                server->close();
                return;
            }
            std::printf("accepted %d from %s\n", ++accepted,
                        r.pipe->peer_address().to_string().c_str());
            r.pipe->close();
            next();
        });
    };
    next();
    loop.run();
    return accepted == 2 ? 0 : 1;
}
