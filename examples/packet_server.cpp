// packet_server [--bind HOST:PORT]
// Serves the packet protocol (cs.packetstream's wire format, docs/packets.md) to many clients.
// Handlers: type 0 echoes the payload; type 1 answers flags = payload length, empty payload;
// type 2 fails with a reason; type 3 echoes flags and payload; any other type fails (no
// handler). It makes no requests, so it sends ERQ at once, and EOF after the client's.
// Prints "listening on HOST:PORT" first (the real port when 0 was asked); on SIGINT/SIGTERM
// it stops accepting, shuts every connection down in order and exits 0.
#include <pipeworks/pipeworks.hpp>

#include <csignal>
#include <cstdio>
#include <set>
#include <string>

using namespace pipeworks;

static int usage(const char* why) {
    std::fprintf(stderr,
                 "packet_server: %s\n"
                 "usage: packet_server [--bind HOST:PORT]\n",
                 why);
    return 2;
}

static void add_handlers(PacketConnection& c) {
    c.handle(0, [](PacketRequest& rq) -> HandlerResult { return std::string(rq.payload); });
    c.handle(1, [](PacketRequest& rq) -> HandlerResult {
        return static_cast<std::uint64_t>(rq.payload.size());
    });
    c.handle(2,
             [](PacketRequest&) -> HandlerResult { return PacketFailure{"type 2 always fails"}; });
    c.handle(3, [](PacketRequest& rq) -> HandlerResult {
        return PacketReply{rq.flags, std::string(rq.payload)};
    });
}

int main(int argc, char** argv) {
    std::string bind = "127.0.0.1:0";
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--bind" && i + 1 < argc)
            bind = argv[++i];
        else if (a == "--help" || a == "-h")
            return usage("serves the packet protocol"), 0;
        else
            return usage(("unknown argument: " + a).c_str());
    }
    auto addr = Address::parse(bind);
    if (!addr) return usage(addr.error().message.c_str());

    Loop loop;
    NetConf conf;
    conf.reuse_addr = true;
    auto opened = Pipe::listen(loop, *addr, conf);
    if (!opened) {
        std::fprintf(stderr, "packet_server: %s\n", opened.error().message.c_str());
        return 1;
    }
    PipePtr server = *opened;
    std::set<PacketConnectionPtr> clients;
    bool stopping = false;
    server->on_accept([&](Pipe&, const PipePtr& pipe) {
        auto conn = PacketConnection::open(pipe);
        if (!conn) {
            std::fprintf(stderr, "packet_server: %s\n", conn.error().message.c_str());
            pipe->close();
            return;
        }
        PacketConnectionPtr c = *conn;
        add_handlers(*c);
        c->end_requests();  // this side never asks
        c->on_end([&, c](PacketConnection&, const Error& e) {
            if (e) std::fprintf(stderr, "packet_server: %s\n", e.message.c_str());
            clients.erase(c);
            if (stopping && clients.empty()) server->close();
        });
        clients.insert(c);
    });
    auto stop = [&](int) {
        if (stopping) return;
        stopping = true;
        // Closing the server would close its connections at once: stop accepting, shut every
        // connection down in order, and close the server when the last one has ended.
        server->pause();
        if (clients.empty()) server->close();
        // A copy: a connection that ends at once leaves the set inside close().
        for (const PacketConnectionPtr& c : std::set<PacketConnectionPtr>(clients)) c->close();
    };
    auto s1 = loop.on_signal(SIGINT, stop);
    auto s2 = loop.on_signal(SIGTERM, stop);
    // After the handlers: whoever reads this line may signal at once.
    std::printf("listening on %s\n", server->local_address().to_string().c_str());
    std::fflush(stdout);
    loop.run();
    return 0;
}
