// NetConf: per-pipe network configuration, the typed form of P2PD's NET_CONF.
// A plain value; validated when a pipe opens (see docs/net_conf.md for every field).
#pragma once

#include <pipeworks/error.hpp>
#include <pipeworks/export.hpp>
#include <pipeworks/framer.hpp>
#include <pipeworks/resolver.hpp>
#include <pipeworks/tls.hpp>
#include <pipeworks/transport.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace pipeworks {

class Loop;

struct NetConf {
    using ms = std::chrono::milliseconds;

    // --- P2PD's NET_CONF keys, same defaults and meaning ---
    ms dns_timeout{2000};  // bound on resolving a "host:port" given to connect() or udp()
    // Which families a name given to connect() or udp() is resolved to, and which goes first
    // (pipeworks only; the Resolver, docs/dns.md).
    FamilyPolicy family_policy = FamilyPolicy::any_ipv6_first;
    bool use_ssl = false;       // TLS on this TCP pipe (client, server, accepted), set up by `tls`
    ms ssl_handshake{4000};     // TLS handshake bound, from TCP connect / accept to established
    int sock_proto = 0;         // protocol passed to socket(): 0, or IPPROTO_TCP / IPPROTO_UDP
    ms recv_timeout{2000};      // default timeout of recv() and accept()
    ms con_timeout{2000};       // bound on a TCP connect (one try: every address of it)
    std::size_t max_qsize = 0;  // messages per subscription queue; 0 = unbounded (drop-oldest)
    bool enable_msg_ids = false;  // UDP: drop a datagram equal to a recent one from the same source
    std::size_t max_msg_ids = 1000;        // how many recent datagram identities are remembered
    bool reuse_addr = false;               // SO_REUSEADDR before bind
    bool broadcast = false;                // SO_BROADCAST on UDP pipes
    std::size_t reader_limit = 64 * 1024;  // most bytes taken by one read
    bool sock_only = false;  // open the socket but never read it: the owner uses native_handle()
    bool do_close = true;    // false: closing the pipe leaves the OS socket open for its owner
    // SO_LINGER on close: 0 s sends a reset; more lets the OS keep sending that long after
    // the end (the lingering close runs off the loop thread).
    std::optional<std::chrono::seconds> linger;
    int send_retry = 2;    // UDP send_recv(): resends after a reply timeout
    Loop* loop = nullptr;  // the loop used by open calls that are given none

    // --- beyond P2PD ---
    // TCP clients: tries after the first when a connect fails (refused, unreachable, no answer
    // within con_timeout), each after a pause that starts at retry_backoff and doubles, up to
    // 30 s. The pipe ends only after the last, its error saying how many there were.
    int connect_retries = 0;
    ms retry_backoff{500};
    bool nodelay = true;  // TCP_NODELAY
    // SO_BINDTODEVICE: the socket sends and receives on this interface only ("eth0"; a
    // Route's interface). Needs CAP_NET_RAW; without it the open fails saying so. Empty: none.
    std::string bind_device;
    std::optional<std::chrono::seconds> keepalive;  // TCP keepalive with this idle delay
    std::size_t high_watermark = 1024 * 1024;       // queued write bytes at which a pipe is "full"
    std::size_t low_watermark = 256 * 1024;         // queued write bytes at which drain fires
    std::size_t max_write_queue =
        64 * 1024 * 1024;  // hard cap: passing it fails the pipe; 0 = none
    std::size_t max_queue_bytes = 16 * 1024 * 1024;  // bytes per subscription queue; 0 = unbounded
    std::size_t max_accept_queue = 1024;             // accepted pipes waiting for accept()
    int backlog = 511;                               // listen() backlog
    // Servers: most accepted pipes open at once; at the limit new connections wait in the OS
    // backlog until one ends (0 = no limit).
    std::size_t max_clients = 4096;
    // A stream pipe whose own write queue is above high_watermark stops reading until it falls
    // to low_watermark, so a peer that sends without reading cannot grow the replies without
    // bound. Relays keep their own rule (a full target stops the pipes that feed it).
    bool read_backpressure = true;
    // close(): how long queued bytes may take to reach the OS. When it passes with bytes still
    // queued the connection is reset and the pipe ends with errc::close_timeout.
    ms close_timeout{5000};
    // No byte received or sent for this long ends the pipe (EndReason::timeout,
    // errc::idle_timeout); 0 = never. Accepted pipes inherit their server's.
    ms idle_timeout{0};
    // Framed stream pipes: a frame whose first byte has arrived must arrive whole within this
    // (EndReason::timeout, errc::frame_timeout); 0 = no bound. Accepted pipes inherit it.
    ms frame_timeout{0};
    // How received bytes become messages and how sent messages are framed (docs/framing.md).
    // Default raw: a TCP read is a message, a UDP datagram is a message.
    Framer framer;
    // TLS settings when use_ssl is set (docs/tls.md): verification on by default.
    TlsConf tls;

    // Checks every field for a pipe of this transport. Returns an empty Error when valid,
    // otherwise one whose message names the field ("NetConf.max_msg_ids: must be > 0").
    PIPEWORKS_API Error validate(Transport transport) const;
};

}  // namespace pipeworks
