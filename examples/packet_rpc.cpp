// A request/response call (the packet layer) in a few lines: a server handles requests of
// type 1 by upper-casing their payload, a client calls it twice and closes in order.
// Prints "call 1: HELLO", "call 2: PACKETS", then "closed in order".
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <cctype>
#include <cstdio>
#include <string>
#include <vector>

using namespace pipeworks;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    Loop loop;
    auto server = Pipe::listen(loop, Address::loopback(Family::ipv4)).value();
    std::vector<PacketConnectionPtr> served;  // the server side of each connection
    server->on_accept([&](Pipe&, const PipePtr& pipe) {
        auto conn = PacketConnection::open(pipe).value();
        conn->handle(1, [](PacketRequest& rq) -> HandlerResult {
            std::string upper(rq.payload);
            for (char& c : upper)
                c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            return upper;
        });
        served.push_back(conn);
    });

    auto client =
        PacketConnection::open(Pipe::connect(loop, server->local_address()).value()).value();
    int answered = 0, done = 0;
    for (const char* word : {"hello", "packets"})
        client->submit(1, word, [&](PacketResult& r) {
            if (r)
                std::printf("call %d: %s\n", ++answered, r.payload.c_str());
            else
                std::printf("call failed: %s\n",
                            r.error ? r.error.message.c_str() : r.payload.c_str());
            if (++done == 2) client->close();  // ERQ, then EOF once both sides are done
        });
    bool orderly = false;
    client->on_end([&](PacketConnection&, const Error& e) {
        orderly = !e;
        std::printf(orderly ? "closed in order\n" : "ended: %s\n", e.message.c_str());
        server->close();
    });
    loop.run_until([&] { return client->ended() && server->ended(); }, 5s);
    return orderly && answered == 2 ? 0 : 1;
}
