// packet_server [--bind HOST:PORT] [--idle-timeout SECONDS] [--frame-timeout SECONDS]
//               [--max-clients N]
// Serves the packet protocol (cs.packetstream's wire format, docs/packets.md) to many clients.
// Handlers: type 0 echoes the payload; type 1 answers flags = payload length, empty payload;
// type 2 fails with a reason; type 3 echoes flags and payload; any other type fails (no
// handler). It makes no requests, so it sends ERQ at once, and EOF after the client's.
// It bounds what its clients may hold: a connection silent for --idle-timeout seconds is closed
// (default 60; 0: never), so is one whose packet has begun but is not whole --frame-timeout
// seconds later (default 10; 0: no bound), and at most --max-clients connections are served at
// once (default 1024), the next ones waiting to be accepted until one ends. A connection the
// server cannot accept (out of file descriptors) is reported on stderr; it keeps serving.
// Prints "listening on HOST:PORT" first (the real port when 0 was asked); on SIGINT/SIGTERM
// it stops accepting, shuts every connection down in order and exits 0 (a second signal while
// it stops changes nothing).
#include "stop_signals.hpp"
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <string_view>

using namespace pipeworks;

namespace {

constexpr const char* kUsage =
    "usage: packet_server [--bind HOST:PORT] [--idle-timeout SECONDS] [--frame-timeout SECONDS]\n"
    "                     [--max-clients N]\n"
    "  --bind HOST:PORT         where to listen (default 127.0.0.1:0, a port of the OS's)\n"
    "  --idle-timeout SECONDS   close a connection silent this long (default 60; 0: never)\n"
    "  --frame-timeout SECONDS  close a connection whose packet is not whole this long after it\n"
    "                           began (default 10; 0: no bound)\n"
    "  --max-clients N          connections served at once, the next ones wait to be accepted\n"
    "                           (default 1024)\n";

int usage(const std::string& why) {
    std::fprintf(stderr, "packet_server: %s\n%s", why.c_str(), kUsage);
    return 2;
}

// "60", "0.5": seconds, from 0 to a million, as milliseconds (a positive value is at least 1).
std::optional<std::chrono::milliseconds> parse_seconds(std::string_view text) {
    double v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(v) || v < 0 ||
        v > 1e6)
        return std::nullopt;
    const auto ms = static_cast<std::int64_t>(std::llround(v * 1000));
    return std::chrono::milliseconds(v > 0 && ms == 0 ? 1 : ms);
}

// A whole number from 1 to a million.
std::optional<std::size_t> parse_count(std::string_view text) {
    std::size_t n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc{} || end != text.data() + text.size() || n == 0 || n > 1'000'000)
        return std::nullopt;
    return n;
}

void add_handlers(PacketConnection& c) {
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

// Serves until a signal has stopped the server and its last connection has ended.
int serve(const Address& addr, std::chrono::milliseconds idle_timeout,
          std::chrono::milliseconds frame_timeout, std::size_t max_clients) {
    Loop loop;
    NetConf conf;
    conf.reuse_addr = true;
    // Accepted pipes inherit these from their server.
    conf.idle_timeout = idle_timeout;
    conf.frame_timeout = frame_timeout;
    conf.max_clients = max_clients;
    auto opened = Pipe::listen(loop, addr, conf);
    if (!opened) {
        std::fprintf(stderr, "packet_server: %s\n", opened.error().message.c_str());
        return 1;
    }
    PipePtr server = *opened;
    // The server survives these (out of file descriptors, say); each report is one line.
    server->on_error([](Pipe&, const Error& e) {
        std::fprintf(stderr, "packet_server: %s%s\n",
                     e == errc::accept_failed ? "accept failed: " : "", e.message.c_str());
    });
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
    hold_stop_signals();  // before the loop (and its signal handlers) goes
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    std::string bind = "127.0.0.1:0";
    std::chrono::milliseconds idle_timeout = std::chrono::seconds(60);
    std::chrono::milliseconds frame_timeout = std::chrono::seconds(10);
    std::size_t max_clients = 1024;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        if (a == "--bind" && has_value) {
            bind = argv[++i];
        } else if (a == "--idle-timeout" || a == "--frame-timeout") {
            if (!has_value) return usage(a + ": needs SECONDS");
            const std::string v = argv[++i];
            const auto ms = parse_seconds(v);
            if (!ms) return usage(a + ": expected seconds (e.g. 60 or 0.5), got \"" + v + "\"");
            (a == "--idle-timeout" ? idle_timeout : frame_timeout) = *ms;
        } else if (a == "--max-clients") {
            if (!has_value) return usage(a + ": needs N");
            const std::string v = argv[++i];
            const auto n = parse_count(v);
            if (!n)
                return usage("--max-clients: expected a whole number from 1 to 1000000, got \"" +
                             v + "\"");
            max_clients = *n;
        } else if (a == "--help" || a == "-h") {
            std::printf("packet_server: serves the packet protocol\n%s", kUsage);
            return 0;
        } else {
            return usage("unknown argument: " + a);
        }
    }
    auto addr = Address::parse(bind);
    if (!addr) return usage(addr.error().message);
    const int status = serve(*addr, idle_timeout, frame_timeout, max_clients);
    ignore_stop_signals();
    return status;
}
