// pipeworks-relay [options] LISTEN TARGET: relays every TCP or TLS client (or UDP source) of
// LISTEN to TARGET, both ways. The manual is --help (and docs/relays.md).
#include "relay_server.hpp"

#include <pipeworks/loop.hpp>
#include <pipeworks/version.hpp>

#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <string>

using namespace pipeworks;
using namespace pipeworks::relay;

namespace {

constexpr const char* kUsage =
    "usage: pipeworks-relay [--framing raw|length] [--max-conns N] [--idle-timeout S]\n"
    "                       [--frame-timeout S] [--connect-timeout S] [--grace S] [--stats]\n"
    "                       [--quiet] [--cert FILE --key FILE] [--require-client-cert]\n"
    "                       [--ca FILE] [--verify-host NAME] [--alpn LIST] [--insecure]\n"
    "                       [--dns SERVER[:PORT][,...]]\n"
    "                       LISTEN TARGET\n"
    "       pipeworks-relay --help | --version\n"
    "LISTEN, TARGET: tcp://HOST:PORT, tls://HOST:PORT or udp://HOST:PORT\n"
    "defaults: --framing raw, --max-conns 4096 for TCP (1024 UDP sources), --idle-timeout 300\n"
    "for TCP to TCP (60 with a UDP side), --frame-timeout 10 (length framing), --connect-timeout\n"
    "5, --grace 5\n";

constexpr const char* kManual = R"(NAME
    pipeworks-relay - relay TCP connections (with or without TLS) and UDP flows to a target

SYNOPSIS
    pipeworks-relay [options] LISTEN TARGET

DESCRIPTION
    Listens on LISTEN. For every accepted TCP client (or every UDP source address) it opens a
    pipe of its own to TARGET and relays both ways until either side ends. A half-close (FIN)
    passes through; a reset on one side resets the other. A slow side stops the relay from
    reading the other one (bounded memory).

    The first line on standard output is "listening on HOST:PORT", the address actually bound
    (the OS's port when 0 was given).

ENDPOINTS
    tcp://HOST:PORT     a TCP server (LISTEN) or a TCP connection per client (TARGET)
    udp://HOST:PORT     a UDP socket; as LISTEN, one session (and one target pipe with its
                        own port) per source address; replies go back to that source
    tls://HOST:PORT     TCP with TLS. As LISTEN the relay terminates TLS (--cert, --key):
                        a client is relayed once its handshake is done. As TARGET it
                        originates TLS and verifies the target's certificate (system trust
                        store, or --ca) and name (HOST, or --verify-host). Otherwise as tcp://
    IPv6 hosts go in brackets: tcp://[::1]:8080. A LISTEN host name is resolved once, at
    start (the system's resolver). A TARGET host name is resolved for every client (or UDP
    source), without blocking: /etc/hosts first, then DNS (resolv.conf's servers, or
    --dns), both families, IPv6 first; every address is tried (Happy Eyeballs, RFC 8305)
    for TCP, the first one is the destination for UDP. No answer within 2 seconds, or no
    such host, and the client is reset (TCP) or its datagrams dropped (UDP), as for an
    unreachable target.
    tls:// to tls:// re-encrypts: the relay sees the plaintext.

OPTIONS
    --framing raw|length
        How the TCP sides are read: raw (default) relays bytes as they come; length reads and
        writes 4-byte big-endian length-prefixed messages. TCP to UDP (either way) needs
        length: each message is one datagram.
    --max-conns N
        At most N connections (TCP) or sources (UDP) at once. A TCP client over the limit is
        reset at once; datagrams from a new source over the limit are dropped. Default: 4096
        connections for TCP, 1024 sources for UDP.
    --idle-timeout S
        Close a connection after S seconds (decimals allowed) without a byte either way.
        Default: 300 for TCP to TCP, 60 when a side is UDP (UDP has no end, and a TCP
        client's FIN cannot be passed on to UDP: replies may still come). 0: none (TCP to
        TCP only).
    --frame-timeout S
        With --framing length: close a connection when a message that has begun to arrive on
        a TCP side is not whole S seconds later, so that no peer holds a partial message
        forever (default 10; 0: no bound). Refused with raw framing.
    --connect-timeout S
        Bound on each TCP connect to TARGET (default 5). A client whose target cannot be
        reached is reset.
    --grace S
        After SIGINT/SIGTERM, how long open connections may finish (default 5).
    --cert FILE, --key FILE
        A tls:// LISTEN (needed there, refused elsewhere): the certificate chain the relay
        presents and its private key, PEM.
    --require-client-cert
        A tls:// LISTEN: refuse clients without a certificate signed by --ca (or by the system
        trust store without --ca).
    --ca FILE
        PEM bundle of the CAs to trust instead of the system store: for a tls:// TARGET's
        certificate, and with --require-client-cert for the clients'.
    --verify-host NAME
        A tls:// TARGET: the name its certificate must carry (and the SNI sent), instead of
        TARGET's HOST. Useful when TARGET is an IP address.
    --alpn LIST
        ALPN protocols, comma-separated in order of preference (h2,http/1.1), offered to a
        tls:// TARGET and accepted from clients of a tls:// LISTEN. None in common fails the
        handshake.
    --insecure
        A tls:// TARGET: do not verify its certificate. Anyone in the middle can read and
        change the traffic; a warning says so on standard error at start (even with --quiet).
    --dns SERVER[:PORT]
        The DNS servers asked for a TARGET given by name, instead of resolv.conf's: IP
        addresses, PORT 53 unless given ([v6]:PORT for IPv6 with a port); repeat the option
        or separate them by commas; asked in that order. Refused with a numeric TARGET.
    --stats
        Print a line per connection when it closes, and totals on SIGUSR1 (below).
    -q, --quiet
        No log lines on standard error (refused clients, unreachable targets, failed client
        handshakes, accept failures, shutdown).
    -h, --help
        This manual.
    --version
        The version of pipeworks-relay (that of pipeworks), then exit.

LOG (standard error, unless --quiet)
    A line per refused client, unreachable target and shutdown, and "accept failed: ..." when
    the listening socket cannot accept a connection (out of file descriptors): the relay
    keeps serving, and the connection waits until it can be accepted. With a tls:// LISTEN,
    "TLS handshake failed: ..." per client whose handshake failed (it is not relayed). A
    target whose TLS handshake fails (its certificate refused, say) is an unreachable
    target: the client is reset.

SIGNALS
    SIGINT, SIGTERM
        Stop accepting (the listening socket is closed; a tls:// LISTEN's stops accepting and
        closes with the last connection), let open connections finish for up to the grace
        period, close what is left, exit 0. A second signal closes everything now;
        more change nothing (the exit status stays 0).
    SIGUSR1
        With --stats: print the totals line.

STATS (--stats, on standard output)
    closed id=ID client=ADDR target=ADDR up_bytes=N down_bytes=N duration_s=SECONDS
        reason=REASON side=client|target|relay [detail="..."]
    totals open=N accepted=N refused=N failed=N up_bytes=N down_bytes=N dropped=N
        tls_failed=N uptime_s=S
    up_bytes: received from the client; down_bytes: received from the target (as read from
    each socket, length prefixes included; over TLS the plaintext). tls_failed: clients of a
    tls:// LISTEN whose handshake failed. reason: peer_close, peer_reset, error, timeout,
    framing_error, local_close, idle_timeout or shutdown; side: whose end closed it.

EXIT STATUS
    0 after SIGINT/SIGTERM, 1 when LISTEN cannot be opened, 2 on a bad argument.

EXAMPLES
    pipeworks-relay tcp://127.0.0.1:8080 tcp://10.0.0.5:80
    pipeworks-relay --max-conns 100 --idle-timeout 300 tcp://[::]:2222 tcp://[fd00::5]:22
    pipeworks-relay udp://0.0.0.0:5353 udp://10.0.0.53:53
    pipeworks-relay --framing length tcp://127.0.0.1:9000 udp://127.0.0.1:9001
    pipeworks-relay --cert relay.pem --key relay.key tls://0.0.0.0:443 tcp://127.0.0.1:8080
    pipeworks-relay tcp://127.0.0.1:8443 tls://example.com:443
    pipeworks-relay --dns 10.0.0.53,10.0.1.53 tcp://127.0.0.1:8080 tcp://app.internal:80
    pipeworks-relay --ca internal-ca.pem --verify-host db.internal tcp://127.0.0.1:5432 \
        tls://10.0.0.7:5432
)";

// The signals the relay handles, none of which may kill it once it is stopping.
constexpr int kHandled[] = {SIGINT, SIGTERM, SIGUSR1};

int usage_error(const std::string& why) {
    std::fprintf(stderr, "pipeworks-relay: %s\n%s", why.c_str(), kUsage);
    return 2;
}

// A string as a double-quoted value on one line.
std::string quoted(const std::string& s) {
    std::string out = "\"";
    for (char ch : s) {
        if (ch == '"' || ch == '\\') out += '\\';
        out += (ch == '\n' || ch == '\r') ? ' ' : ch;
    }
    return out + "\"";
}

// `target`: TARGET as given, for a connection whose target name never resolved.
void print_report(const ConnReport& r, const std::string& target) {
    std::string line = "closed id=" + std::to_string(r.id) + " client=" + r.client.to_string() +
                       " target=" + (r.target.empty() ? target : r.target.to_string()) +
                       " up_bytes=" + std::to_string(r.up_bytes) +
                       " down_bytes=" + std::to_string(r.down_bytes);
    char dur[32];
    std::snprintf(dur, sizeof dur, "%.3f", static_cast<double>(r.duration.count()) / 1000.0);
    line += std::string(" duration_s=") + dur + " reason=" + r.reason + " side=" + r.side;
    if (!r.detail.empty()) line += " detail=" + quoted(r.detail);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
}

void print_totals(const RelayCounters& t, std::uint64_t uptime_ms) {
    std::printf(
        "totals open=%llu accepted=%llu refused=%llu failed=%llu up_bytes=%llu down_bytes=%llu "
        "dropped=%llu tls_failed=%llu uptime_s=%.3f\n",
        static_cast<unsigned long long>(t.open), static_cast<unsigned long long>(t.accepted),
        static_cast<unsigned long long>(t.refused), static_cast<unsigned long long>(t.failed),
        static_cast<unsigned long long>(t.up_bytes), static_cast<unsigned long long>(t.down_bytes),
        static_cast<unsigned long long>(t.dropped), static_cast<unsigned long long>(t.tls_failed),
        static_cast<double>(uptime_ms) / 1000.0);
    std::fflush(stdout);
}

// Relays until a signal has stopped the relay; the exit status. The loop is gone on return.
int run(const CommandLine& cl) {
    Loop loop;
    auto started = RelayServer::start(loop, cl.relay);
    if (!started) {
        std::fprintf(stderr, "pipeworks-relay: %s\n", started.error().message.c_str());
        return 1;
    }
    std::shared_ptr<RelayServer> relay = *started;
    // Not a log line: --quiet does not hide it.
    if (cl.relay.target_tls.insecure_skip_verify)
        std::fprintf(stderr,
                     "pipeworks-relay: WARNING: --insecure: the certificate of %s is not verified; "
                     "anyone in the middle can read and change the traffic\n",
                     cl.relay.target.text.c_str());
    const bool quiet = cl.quiet;
    relay->on_log([quiet](const std::string& line) {
        if (!quiet) std::fprintf(stderr, "pipeworks-relay: %s\n", line.c_str());
    });
    if (cl.stats)
        relay->on_close([target = cl.relay.target.host_port()](const ConnReport& r) {
            print_report(r, target);
        });

    const std::uint64_t start_ms = loop.now_ms();

    bool stopping = false;
    auto stop = [&](int signum) {
        if (stopping) {  // a second signal: no more grace
            relay->close_all();
            return;
        }
        stopping = true;
        if (!quiet)
            std::fprintf(stderr, "pipeworks-relay: %s: stopping; %zu connection(s) open\n",
                         signum == SIGINT ? "SIGINT" : "SIGTERM", relay->open_connections());
        // The handlers stay until the loop goes: a signal during the last steps is handled,
        // not fatal.
        relay->shutdown(cl.grace, [&] { loop.stop(); });
    };
    SignalWatch on_int = loop.on_signal(SIGINT, stop);
    SignalWatch on_term = loop.on_signal(SIGTERM, stop);
    SignalWatch on_usr1 = loop.on_signal(SIGUSR1, [&](int) {
        if (cl.stats) print_totals(relay->counters(), loop.now_ms() - start_ms);
    });
    // After the handlers: whoever reads this line may signal at once.
    std::printf("listening on %s\n", relay->local_address().to_string().c_str());
    std::fflush(stdout);
    loop.run();
    if (cl.stats) print_totals(relay->counters(), loop.now_ms() - start_ms);
    relay.reset();
    // The loop's handlers go with it, and libuv then restores the signals' default action:
    // block them first (one that arrives waits), main() ignores them once the loop is gone.
    sigset_t held;
    sigemptyset(&held);
    for (int sig : kHandled) sigaddset(&held, sig);
    pthread_sigmask(SIG_BLOCK, &held, nullptr);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    auto parsed = parse_command_line(std::span<const char* const>(argv + 1, argc - 1));
    if (!parsed) return usage_error(parsed.error().message);
    const CommandLine& cl = *parsed;
    if (cl.help) {
        std::fputs(kManual, stdout);
        return 0;
    }
    if (cl.version) {
        std::printf("pipeworks-relay %s\n", pipeworks::version());
        return 0;
    }
    const int status = run(cl);
    for (int sig : kHandled) std::signal(sig, SIG_IGN);  // also drops one that waited
    return status;
}
