// RelayConfig: what pipeworks-relay relays (endpoints, framing, limits, TLS), and the parsing
// of its command line into one. Plain values; thread-safe as values.
#pragma once

#include <pipeworks/address.hpp>
#include <pipeworks/error.hpp>
#include <pipeworks/net_conf.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pipeworks::relay {

// tls: TCP with TLS on it (terminated on LISTEN, originated toward TARGET).
enum class Scheme : std::uint8_t { tcp, udp, tls };

const char* to_string(Scheme s) noexcept;

// TCP, with or without TLS: a byte stream, framed and timed alike.
constexpr bool is_stream(Scheme s) noexcept {
    return s != Scheme::udp;
}

// One side of the relay: "tcp://HOST:PORT", "tls://HOST:PORT" or "udp://HOST:PORT" ("[v6]:port"
// for IPv6).
struct Endpoint {
    Scheme scheme = Scheme::tcp;
    Address address;         // a numeric HOST, or a LISTEN name resolved when parsed; else empty
    std::string text;        // as given, for messages
    std::string host;        // HOST as given, without brackets: the name a tls:// TARGET must carry
    std::uint16_t port = 0;  // PORT, when HOST is a name left for the Resolver (address empty)

    // A TARGET by name: resolved for each connection (or UDP source) by the loop's Resolver.
    bool by_name() const noexcept { return address.empty(); }
    std::uint16_t port_number() const noexcept { return by_name() ? port : address.port(); }
    // "HOST:PORT" ("[v6]:PORT"), as Pipe::connect and Pipe::udp take it.
    std::string host_port() const;
};

// Whether a host name in an endpoint is resolved at once (blocking, the system's resolver) or
// left for the loop's Resolver.
enum class Resolve : std::uint8_t { now, later };

// Parses an endpoint; with Resolve::now a host name is resolved (blocking). Malformed:
// errc::invalid_address.
Result<Endpoint> parse_endpoint(std::string_view text, Resolve resolve = Resolve::now);

// Parses --dns values: "SERVER[:PORT]" (an IP address; "[v6]:PORT" with a port), several
// separated by commas; PORT defaults to 53. Appends them to `out`.
Error parse_dns_servers(std::string_view text, std::vector<Address>& out);

// How the TCP sides split the byte stream into messages.
enum class Framing : std::uint8_t {
    raw,     // bytes as they come (TCP <-> TCP only)
    length,  // 4-byte big-endian length, then that many bytes (Framer::message())
};

// UDP sources relayed at once when max_conns is not given: UDP has no close, so the table of
// sources must have a bound of its own.
inline constexpr std::size_t kDefaultMaxUdpSources = 1024;
// Safe defaults for TCP (in the spirit of haproxy's maxconn and timeout client): a relay is not
// held by many clients or by silent ones unless told so (0 / --idle-timeout 0 lift them).
inline constexpr std::size_t kDefaultMaxTcpConns = 4096;
inline constexpr std::chrono::milliseconds kDefaultTcpIdleTimeout{300'000};
// How long a relay with a UDP side may stay silent before it is closed, unless idle_timeout is
// given: UDP has no end, and a TCP side's FIN cannot be passed on to it.
inline constexpr std::chrono::milliseconds kDefaultUdpIdleTimeout{60'000};
// How long a length-framed TCP side may take to deliver a message it has begun, unless
// frame_timeout is given: a peer cannot hold a partial message (up to its full length) forever.
inline constexpr std::chrono::milliseconds kDefaultFrameTimeout{10'000};

struct RelayConfig {
    Endpoint listen;
    Endpoint target;
    Framing framing = Framing::raw;
    // Most connections (TCP) or sources (UDP) relayed at once; 0: kDefaultMaxTcpConns for TCP,
    // kDefaultMaxUdpSources for UDP. A TCP client over the limit is reset at once; a datagram
    // from a new source over the limit is dropped.
    std::size_t max_conns = 0;
    // Closes a connection (or reaps a UDP source) after this long without a byte in either
    // direction. nullopt: kDefaultTcpIdleTimeout for TCP to TCP, kDefaultUdpIdleTimeout when a
    // side is UDP.
    // 0: never (TCP to TCP only; a UDP side needs one, it has no other end).
    std::optional<std::chrono::milliseconds> idle_timeout;
    // Length framing: a message whose first byte has come on a TCP side must be whole within
    // this, or its connection is closed. nullopt: kDefaultFrameTimeout; 0: no bound. Refused
    // with raw framing (raw reads have no messages to time).
    std::optional<std::chrono::milliseconds> frame_timeout;
    // Bound on each TCP connect to the target.
    std::chrono::milliseconds connect_timeout{5000};
    // The NetConf of every pipe the relay opens (watermarks, reader_limit, ...); its framer,
    // con_timeout, idle_timeout, frame_timeout, use_ssl and tls are replaced by the fields
    // above and below.
    NetConf conf;
    // A tls:// LISTEN: the relay's certificate and key (needed), client certificates.
    TlsConf listen_tls;
    // A tls:// TARGET: whom to trust, the name to check (empty: TARGET's host), ALPN.
    TlsConf target_tls;
    // DNS servers for a TARGET given by name (--dns): the loop's Resolver is configured with
    // them at start (/etc/hosts still first). Empty: the system's resolv.conf.
    std::vector<Address> dns_servers;

    // Checks the combination: a TCP side relayed to a UDP side needs length framing, framing
    // needs a TCP side, a tls:// LISTEN needs a certificate and key, DNS servers need a TARGET
    // by name. An empty Error when valid (errc::invalid_config otherwise).
    Error validate() const;
};

// What the command line asks for beyond the relay itself.
struct CommandLine {
    RelayConfig relay;
    bool help = false;     // --help: print the manual and exit
    bool version = false;  // --version: print the version and exit
    bool stats = false;    // --stats: a line per connection at close, totals on SIGUSR1
    bool quiet = false;    // --quiet: no log lines on stderr (errors that stop the tool excepted)
    std::chrono::milliseconds grace{5000};  // after SIGINT/SIGTERM, before closing what is open
};

// Parses the arguments after the program name. An Error (errc::invalid_config) says what is
// wrong in a line fit for the user. With --help or --version the rest is not checked.
Result<CommandLine> parse_command_line(std::span<const char* const> args);

// Parses a non-negative number of seconds ("5", "0.25") into milliseconds.
Result<std::chrono::milliseconds> parse_seconds(std::string_view option, std::string_view text);

}  // namespace pipeworks::relay
