// echo_server [--udp] [--bind HOST:PORT] [--framing raw|length] [--idle-timeout SECONDS]
//             [--frame-timeout SECONDS] [--max-clients N] [--tls-cert FILE --tls-key FILE]
// Echoes every message back to its sender. --framing length: messages are 4-byte big-endian
// length-prefixed frames (Framer::message()), echoed as frames; raw (the default) echoes what
// each read (or datagram) brings.
// A TCP server bounds what its clients may hold: a connection silent for --idle-timeout
// seconds is closed (default 60; 0: never); with --framing length, one whose frame has begun
// but is not whole --frame-timeout seconds later is closed (default 10; 0: no bound); and at
// most --max-clients connections are served at once (default 1024), the next ones waiting to
// be accepted until one ends. A connection the server cannot accept (out of file descriptors)
// is reported on stderr; the server keeps serving.
// --tls-cert and --tls-key make it a TLS server (docs/tls.md): clients see their connection
// only after the handshake, and the echo carries plaintext as without TLS.
// Prints "listening on HOST:PORT" first (the real port when 0 was asked) and exits 0 on
// SIGINT/SIGTERM after closing cleanly (a second signal while it stops changes nothing).
#include "stop_signals.hpp"
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

using namespace pipeworks;

namespace {

constexpr const char* kUsage =
    "usage: echo_server [--udp] [--bind HOST:PORT] [--framing raw|length]\n"
    "                   [--idle-timeout SECONDS] [--frame-timeout SECONDS] [--max-clients N]\n"
    "                   [--tls-cert FILE --tls-key FILE]\n"
    "  --udp                    echo datagrams (default: TCP)\n"
    "  --bind HOST:PORT         where to listen (default 127.0.0.1:0, a port of the OS's)\n"
    "  --framing raw|length     raw (default): what a read brings; length: 4-byte big-endian\n"
    "                           length-prefixed messages\n"
    "  --idle-timeout SECONDS   TCP: close a connection silent this long (default 60; 0: never)\n"
    "  --frame-timeout SECONDS  TCP, --framing length: close a connection whose frame is not\n"
    "                           whole this long after it began (default 10; 0: no bound)\n"
    "  --max-clients N          TCP: connections served at once, the next ones wait to be\n"
    "                           accepted (default 1024)\n"
    "  --tls-cert FILE          TCP: serve TLS with this certificate chain (PEM, leaf first)\n"
    "  --tls-key FILE           and this private key (PEM); both or neither\n";

int usage(const std::string& why) {
    std::fprintf(stderr, "echo_server: %s\n%s", why.c_str(), kUsage);
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

}  // namespace

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    bool udp = false;
    std::string bind = "127.0.0.1:0";
    Framer framer;
    std::optional<std::chrono::milliseconds> idle_timeout, frame_timeout;
    std::optional<std::size_t> max_clients;
    std::string tls_cert, tls_key;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        if (a == "--udp") {
            udp = true;
        } else if (a == "--bind" && has_value) {
            bind = argv[++i];
        } else if (a == "--framing" && has_value) {
            const std::string f = argv[++i];
            if (f == "length")
                framer = Framer::message();
            else if (f != "raw")
                return usage("--framing: expected raw or length, got " + f);
        } else if (a == "--idle-timeout" || a == "--frame-timeout") {
            if (!has_value) return usage(a + ": needs SECONDS");
            const std::string v = argv[++i];
            const auto ms = parse_seconds(v);
            if (!ms) return usage(a + ": expected seconds (e.g. 60 or 0.5), got \"" + v + "\"");
            (a == "--idle-timeout" ? idle_timeout : frame_timeout) = *ms;
        } else if (a == "--max-clients") {
            if (!has_value) return usage(a + ": needs N");
            const std::string v = argv[++i];
            max_clients = parse_count(v);
            if (!max_clients)
                return usage("--max-clients: expected a whole number from 1 to 1000000, got \"" +
                             v + "\"");
        } else if (a == "--tls-cert" || a == "--tls-key") {
            if (!has_value) return usage(a + ": needs FILE");
            (a == "--tls-cert" ? tls_cert : tls_key) = argv[++i];
        } else if (a == "--help" || a == "-h") {
            std::printf("echo_server: echoes every message to its sender\n%s", kUsage);
            return 0;
        } else {
            return usage("unknown argument: " + a);
        }
    }
    // A limit that would do nothing is refused rather than ignored.
    if (udp && (idle_timeout || frame_timeout || max_clients))
        return usage(std::string(idle_timeout    ? "--idle-timeout"
                                 : frame_timeout ? "--frame-timeout"
                                                 : "--max-clients") +
                     " applies to TCP: a UDP server has no connections");
    if (tls_cert.empty() != tls_key.empty())
        return usage(tls_cert.empty() ? "--tls-key needs --tls-cert too"
                                      : "--tls-cert needs --tls-key too");
    if (udp && !tls_cert.empty()) return usage("--tls-cert applies to TCP: TLS runs on streams");
    if (frame_timeout && framer.kind == FramerKind::raw)
        return usage("--frame-timeout applies to --framing length: raw reads have no frames");
    auto addr = Address::parse(bind);
    if (!addr) return usage(addr.error().message);

    {
        Loop loop;
        NetConf conf;
        conf.reuse_addr = true;
        conf.framer = framer;
        if (!udp) {
            // Accepted pipes inherit these from their server.
            conf.idle_timeout = idle_timeout.value_or(std::chrono::seconds(60));
            if (framer.kind != FramerKind::raw)
                conf.frame_timeout = frame_timeout.value_or(std::chrono::seconds(10));
            conf.max_clients = max_clients.value_or(1024);
            conf.use_ssl = !tls_cert.empty();
            conf.tls.cert_file = tls_cert;
            conf.tls.key_file = tls_key;
        }
        auto opened = udp ? Pipe::udp(loop, *addr, {}, conf) : Pipe::listen(loop, *addr, conf);
        if (!opened) {
            std::fprintf(stderr, "echo_server: %s\n", opened.error().message.c_str());
            return 1;
        }
        PipePtr server = *opened;
        if (udp) {
            server->on_message([](Pipe& p, const Message& m) { (void)p.send_to(m.data, m.from); });
        } else {
            // Copied to every accepted pipe: each echoes to its own peer.
            server->on_message([](Pipe& p, const Message& m) { (void)p.send(m.data); });
        }
        // The server survives these (out of file descriptors, say); each report is one line.
        server->on_error([](Pipe&, const Error& e) {
            std::fprintf(stderr, "echo_server: %s%s\n",
                         e == errc::accept_failed ? "accept failed: " : "", e.message.c_str());
        });
        // Handlers first: whoever reads the line below may signal at once.
        auto stop = [&](int) { server->close(); };
        auto s1 = loop.on_signal(SIGINT, stop);
        auto s2 = loop.on_signal(SIGTERM, stop);
        std::printf("listening on %s\n", server->local_address().to_string().c_str());
        std::fflush(stdout);
        loop.run();
        hold_stop_signals();  // before the loop (and its signal handlers) goes
    }
    ignore_stop_signals();
    return 0;
}
