// Pipe: one face for every network endpoint: a TCP client, a TCP server, a connection a server
// accepted, a UDP socket with or without a default destination, over IPv4 and IPv6.
//
// Threading: a Pipe is bound to its Loop's thread. Every member (and every callback) runs on
// that thread; to act from another thread, Loop::post() a function that does it.
//
// Lifetime: pipes are shared-owned (PipePtr). While a pipe is open the library holds a reference,
// so dropping yours does not close it; close() does. close() is idempotent and safe inside any
// callback. The pipe ends exactly once: when its handle has really closed, the end callbacks run
// with the reason, and no callback of the pipe runs after that.
#pragma once

#include <pipeworks/address.hpp>
#include <pipeworks/error.hpp>
#include <pipeworks/export.hpp>
#include <pipeworks/net_conf.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pipeworks {

class Loop;
class Pipe;
using PipePtr = std::shared_ptr<Pipe>;

enum class PipeKind : std::uint8_t {
    tcp_client,    // a TCP connection this side opened
    tcp_server,    // a listening TCP socket; hands out tcp_accepted pipes
    tcp_accepted,  // a TCP connection a server accepted
    udp,           // a UDP socket, with or without a default destination
};

enum class EndReason : std::uint8_t {
    local_close,    // close() was called (or the server owning this pipe closed)
    peer_close,     // the peer closed its side in order (FIN)
    peer_reset,     // the peer reset the connection (RST, or EPIPE on write)
    error,          // any other failure: see EndInfo::error
    timeout,        // a deadline passed (connect, name resolution, idle, frame, close): see
                    // EndInfo::error for which
    framing_error,  // the bytes received broke the pipe's framer, or the stream ended inside a
                    // frame (see EndInfo::error)
};

PIPEWORKS_API const char* to_string(PipeKind k) noexcept;
PIPEWORKS_API const char* to_string(EndReason r) noexcept;

// Why a pipe ended. `error` is empty when the pipe itself ended by local_close or peer_close
// (a recv() refused for another reason carries local_close with an error saying why).
struct EndInfo {
    EndReason reason = EndReason::local_close;
    Error error;
    // framing_error because the stream ended inside a frame: how many bytes of it arrived.
    std::size_t partial_frame_bytes = 0;
    // Bytes send() had accepted that never reached the OS (dropped by this end). 0 on every
    // orderly end: a graceful close or half-close ends only once all of them went out.
    std::size_t unsent_bytes = 0;
};

// A message as delivered to a callback. `data` is valid only during the call; copy what you keep.
// What a message is depends on the pipe's framer (NetConf::framer): with the default raw framer,
// a chunk as read on TCP and one datagram on UDP; otherwise one whole frame.
struct Message {
    std::string_view data;
    Address from;  // the sender: the peer for TCP, the datagram's source for UDP
    // json_header framer: the parsed header (data is the content); null for other framers.
    // Valid during the call, like data.
    const JsonMessageHeader* json = nullptr;
};

// A message that owns its bytes (from a subscription queue).
struct Received {
    std::string data;
    Address from;
    std::string json_header{};  // json_header framer: the JSON header text; empty otherwise
};

// What recv() hands over: a message, or why there is none.
// `finished`: the peer finished sending (FIN) and the queue is empty; the pipe is still open
// for sending (see Pipe::on_eof), so this is not the end of the pipe.
struct RecvResult {
    enum class Status : std::uint8_t { message, timeout, ended, finished };
    Status status = Status::timeout;
    Received message;  // valid when status == message
    EndInfo end;       // valid when status == ended
    explicit operator bool() const noexcept { return status == Status::message; }
};

// What accept() hands over: an accepted pipe, or why there is none.
struct AcceptResult {
    RecvResult::Status status = RecvResult::Status::timeout;
    PipePtr pipe;  // valid when status == message
    EndInfo end;   // valid when status == ended (the server ended)
    explicit operator bool() const noexcept { return pipe != nullptr; }
};

// Which messages a subscription takes: plain byte matching (not a regular expression).
// Unanchored: `bytes` occurs anywhere in the message. Anchored: the message starts with `bytes`.
// Empty `bytes` matches every message.
struct Pattern {
    std::string bytes;
    bool anchored = false;

    static Pattern any() { return {}; }
    static Pattern contains(std::string_view b) { return {std::string(b), false}; }
    static Pattern prefix(std::string_view b) { return {std::string(b), true}; }
    PIPEWORKS_API bool matches(std::string_view message) const noexcept;
};

// Counters of one pipe. Rates are bytes per second over the last `window`. Bytes are message
// bytes: on a framed pipe the framing (length fields, delimiters, JSON headers) is not counted.
struct PipeStats {
    std::uint64_t bytes_in = 0, bytes_out = 0;
    std::uint64_t msgs_in = 0, msgs_out = 0;
    std::uint64_t dropped = 0;  // messages dropped: full queues, duplicate datagrams
    double rate_in = 0, rate_out = 0;
    std::chrono::milliseconds window{0};
};

using CallbackId = std::uint64_t;
using SubId = std::uint64_t;

// The implicit subscription of a pipe with no message callback: it takes every message.
inline constexpr SubId all_messages = 0;

// What a queued message costs NetConf::max_queue_bytes beyond its bytes (its entry and its
// source address), so that empty datagrams cannot grow a bounded queue without end.
inline constexpr std::size_t queue_entry_overhead = 128;

class PIPEWORKS_API Pipe : public std::enable_shared_from_this<Pipe> {
public:
    using MessageFn = std::function<void(Pipe&, const Message&)>;
    using UpFn = std::function<void(Pipe&)>;
    using EndFn = std::function<void(Pipe&, const EndInfo&)>;
    using DrainFn = std::function<void(Pipe&)>;
    using AcceptFn = std::function<void(Pipe& server, const PipePtr& accepted)>;
    using RecvFn = std::function<void(Pipe&, RecvResult&)>;
    using AcceptResultFn = std::function<void(Pipe& server, AcceptResult&)>;
    using ClosedFn = std::function<void(Pipe&)>;
    using EofFn = std::function<void(Pipe&)>;
    using ErrorFn = std::function<void(Pipe&, const Error&)>;

    // ---- Opening. Configuration and synchronous failures (bind, listen) come back as an
    // Error; connection failures come later, as the pipe's end (reason error or timeout).

    // A TCP client to `to`, optionally bound to `local` first (the route). Up fires when
    // connected; if NetConf::con_timeout passes first the pipe ends with reason timeout.
    static Result<PipePtr> connect(Loop& loop, const Address& to, const NetConf& conf = {},
                                   const Address& local = {});
    // A TCP client to "host:port" ("[v6]:port"); the name is resolved on the loop by its
    // Resolver (c-ares), bounded by NetConf::dns_timeout, families as NetConf::family_policy
    // says. Numeric hosts are not resolved. Every address is tried as connect_any() does.
    static Result<PipePtr> connect(Loop& loop, std::string_view host_port, const NetConf& conf = {},
                                   const Address& local = {});
    // A TCP client to the first of `candidates` that answers (Happy Eyeballs, RFC 8305): the
    // families interleaved, the first one's family first; a new attempt every 250 ms, or at
    // once when one fails; the first to connect wins, the others are closed. con_timeout bounds
    // the whole; when every one fails the error lists each address and its reason.
    static Result<PipePtr> connect_any(Loop& loop, const std::vector<Address>& candidates,
                                       const NetConf& conf = {});
    // A TCP server listening on `local` (port 0: the OS picks; see local_address()).
    static Result<PipePtr> listen(Loop& loop, const Address& local, const NetConf& conf = {});
    // A UDP pipe bound to `local` (empty: any address of dest's family, port from the OS),
    // sending to `dest` by default (empty: no default; use send_to()).
    static Result<PipePtr> udp(Loop& loop, const Address& local, const Address& dest = {},
                               const NetConf& conf = {});
    // A UDP pipe sending to "host:port" ("[v6]:port") by default, the name resolved as
    // connect() resolves one (dns_timeout, family_policy; a local address narrows the family to
    // its own); the first address that rule picks is the destination. The socket opens, bound
    // to `local` (empty: any address), and up fires, once it is resolved; datagrams sent before
    // are held (bounded by max_write_queue) and go out then. A failed lookup ends the pipe as
    // for connect() (reason error or timeout; what was held is in EndInfo::unsent_bytes).
    // Numeric hosts are not resolved.
    static Result<PipePtr> udp(Loop& loop, std::string_view host_port, const NetConf& conf = {},
                               const Address& local = {});
    // Takes over an existing socket: a listening TCP socket becomes a server, a connected
    // one a client, a datagram socket a UDP pipe (its peer, if connected, the destination).
    // With conf.do_close false the caller keeps the fd open and owns it after the pipe ends.
    // A refused fd (an Error returned) stays with the caller, open.
    static Result<PipePtr> adopt(Loop& loop, int fd, const NetConf& conf = {});

    // The same, on conf.loop (an error if it is null).
    static Result<PipePtr> connect(const Address& to, const NetConf& conf);
    static Result<PipePtr> listen(const Address& local, const NetConf& conf);
    static Result<PipePtr> udp(const Address& local, const Address& dest, const NetConf& conf);

    // ---- Callbacks. Each add returns a token for remove(). On a server, message, up, end and
    // drain callbacks are also copied to every pipe it accepts afterwards (copies: removing one
    // from a client leaves the others alone); the server's own end fires its end callbacks.

    CallbackId on_message(MessageFn fn);
    CallbackId on_up(UpFn fn);        // connected (clients), accepted (accepted pipes), open (UDP)
    CallbackId on_end(EndFn fn);      // exactly once; after it only close()'s `done` runs
    CallbackId on_drain(DrainFn fn);  // queued write bytes fell to low_watermark after high
    CallbackId on_accept(AcceptFn fn);  // servers: each accepted pipe, in accept order
    // Stream pipes: the peer finished sending (FIN); its earlier messages were all delivered.
    // The pipe stays open for sending: call shutdown() once done (or close()), and it ends with
    // peer_close. With no eof callback the pipe does that itself: it finishes writing what is
    // queued, then ends with peer_close (so an echo server returns every byte).
    CallbackId on_eof(EofFn fn);
    // Failures the pipe survives, reported once per burst: a server that cannot accept
    // (errc::accept_failed: out of file descriptors, ...) keeps serving.
    CallbackId on_error(ErrorFn fn);
    // Removes the callback with this token. Returns false if there is none.
    bool remove(CallbackId id);

    // ---- Sending. An Error is returned at once when the bytes cannot be queued. TCP: a
    // failure of the transfer itself ends the pipe. UDP: a datagram that fails after being
    // queued is counted in stats().dropped and the pipe stays up.

    // TCP: queues bytes for the peer (also while still connecting). UDP: one datagram to the
    // default destination.
    Error send(std::string_view bytes);
    Error send(std::span<const std::byte> bytes);
    // UDP: one datagram to `to`.
    Error send_to(std::string_view bytes, const Address& to);
    // Bytes past the framer, as they are: a CRLF-framed pipe sending a request that contains
    // CRLF, a protocol switch's handshake. The caller frames them (or not).
    Error send_raw(std::string_view bytes);
    // json_header pipes: one message with this content type and encoding in its JSON header
    // ("text/json", "utf-8"), as the Python application-protocol peers expect. Other framers:
    // errc::invalid_config.
    Error send_json(std::string_view content, std::string_view content_type,
                    std::string_view content_encoding);

    // The framer (NetConf::framer) applies to every send: the message is framed on the way out
    // (a length field added, a delimiter appended, ...). A message the framer cannot carry
    // (over max_message, containing the delimiter, wrong fixed size) is refused with an Error
    // and nothing is queued.

    // Replaces the framer for what is received from now on and what is sent from now on
    // (a protocol switch after a handshake, or a packet layer over an open pipe). Bytes read
    // but not yet delivered are decoded with the new framer. Returns the framer's validation
    // error (nothing changes then), or errc::pipe_ended once the pipe has ended. On a server it
    // sets the framer of the pipes it accepts from now on.
    Error set_framer(const Framer& framer);
    const Framer& framer() const noexcept;

    // Bytes accepted by send() that the OS has not yet taken.
    std::size_t write_queue_bytes() const noexcept;
    // True while write_queue_bytes() is below conf().high_watermark.
    bool writable() const noexcept;

    // ---- Queues (P2PD's subscriptions). Dispatch order per message: callbacks, then every
    // matching subscription (fan-out). A subscription with a handler gets the message in its
    // handler instead of a queue. Queues bounded by max_qsize / max_queue_bytes drop the oldest.
    // `from` filters the source: empty = any; an address with port 0 = any port of that IP.
    SubId subscribe(Pattern pattern, const Address& from = {}, MessageFn handler = {});
    bool unsubscribe(SubId sub);
    // Next message of `sub`, waiting up to `timeout` (default conf().recv_timeout). The handler
    // runs exactly once: with a message, with status timeout, or with status ended when the
    // pipe ends (or the subscription is removed) while waiting.
    void recv(SubId sub, std::optional<std::chrono::milliseconds> timeout, RecvFn fn);
    void recv(RecvFn fn) { recv(all_messages, std::nullopt, std::move(fn)); }
    // A request and its reply, P2PD's UDP await pattern: sends `bytes` (a datagram to `to`, or
    // to the default destination when `to` is empty; on TCP to the peer), then recv()s the next
    // message of `sub`. On UDP, when `timeout` (default conf().recv_timeout) passes without a
    // message, the datagram is sent again, up to conf().send_retry times; TCP delivers or fails
    // on its own, so a stream pipe sends once and waits once. The handler runs exactly once, as
    // for recv(): the reply, status timeout after the last attempt, or status ended (also when a
    // resend is refused: EndInfo::error says why). A first send that is refused returns its
    // Error and the handler does not run. A message already queued in `sub` is the reply.
    Error send_recv(std::string_view bytes, SubId sub,
                    std::optional<std::chrono::milliseconds> timeout, RecvFn fn,
                    const Address& to = {});
    // The next queued message of `sub`, if any, without waiting.
    std::optional<Received> try_recv(SubId sub = all_messages);
    // Messages waiting in `sub`'s queue.
    std::size_t queued(SubId sub = all_messages) const noexcept;

    // ---- Linking (relays). Dispatch order per message: linked pipes, then callbacks, then
    // queues. A linked pipe gets every message this pipe receives through its own send(), so
    // its framer frames it. Backpressure: while a target's queued write bytes are above its
    // high_watermark, every pipe linked to it stops reading, until they fall to low_watermark.
    // When a linked pipe's peer sends FIN, each target's write side is shut down once what it
    // queued has gone out (a half-close passes through); a pipe whose read side has ended and
    // that no linked pipe feeds any more ends with peer_close. A reset closes the targets at
    // once; any other end closes them after their queued bytes. Links of an ended pipe go away.

    // What this pipe receives is also sent down `target` (one direction). Errors: the same
    // pipe, a server (errc::wrong_pipe_kind), another loop, an ended pipe (errc::pipe_ended), a
    // UDP target without a destination (errc::not_connected), TCP to UDP without a framer on
    // the TCP side, UDP to TCP without a framer on the TCP side (errc::invalid_config: a
    // message must stay a message). Linking twice is no error.
    Error link(const PipePtr& target);
    // Stops sending to `target`. Returns false if it was not linked.
    bool unlink(const PipePtr& target);
    // Links a to b and b to a: a relay. On error neither link is made.
    static Error relay(const PipePtr& a, const PipePtr& b);
    // The pipes this pipe sends its messages to.
    std::vector<PipePtr> links() const;

    // ---- Servers. Accepted pipes go to on_accept callbacks, then to a waiting accept(); with
    // neither an accept nor a message callback they wait in a queue (max_accept_queue;
    // beyond it they are closed).
    void accept(std::optional<std::chrono::milliseconds> timeout, AcceptResultFn fn);
    std::optional<PipePtr> try_accept();
    // The accepted pipes of this server that are still open, in accept order.
    std::vector<PipePtr> clients() const;

    // ---- Control.
    // Ends the pipe (reason local_close unless it already has one); `done` runs after the end
    // callbacks, once the handle is closed. A server also closes its accepted pipes. Bytes
    // already sent still go out first, for at most NetConf::close_timeout; if some are still
    // queued then, the connection is reset (the peer sees an error, not a clean end) and the
    // pipe ends with reason timeout, errc::close_timeout and EndInfo::unsent_bytes.
    void close(ClosedFn done = {});
    // Stream pipes: sends FIN once what is queued has gone out, and keeps reading. send() is
    // refused afterwards. The pipe ends (peer_close) when the peer has finished too.
    // Errors: a server or UDP pipe (errc::wrong_pipe_kind), an ended pipe (errc::pipe_ended).
    Error shutdown();
    // Stops / restarts reading. Paused pipes still send. A paused server leaves new
    // connections in the OS backlog until resumed.
    void pause();
    void resume();
    bool paused() const noexcept;

    // ---- State.
    PipeKind kind() const noexcept;
    Transport transport() const noexcept;
    bool is_up() const noexcept;   // connected (TCP) or open (UDP, servers) and not ending
    bool ending() const noexcept;  // close() called or a failure seen; end not yet delivered
    bool ended() const noexcept;   // the end callbacks have run
    // Stream pipes: the peer has finished sending (FIN received).
    bool peer_finished() const noexcept;
    // Stream pipes: shutdown() was called (or a relay passed a FIN on).
    bool write_shut() const noexcept;
    // Why the pipe ended (or is ending); nullopt while it is open.
    std::optional<EndInfo> end_info() const;
    Address local_address() const;
    // TCP: the peer. UDP: the default destination (empty when none).
    Address peer_address() const;
    const NetConf& conf() const noexcept;
    Loop& loop() const noexcept;
    // The OS socket (-1 once closed, or while a name is being resolved).
    int native_handle() const noexcept;
    PipeStats stats() const;
    // TCP pipes: the OS still calls the connection established (TCP_INFO), false once the
    // peer has closed or reset it, even before a read has noticed.
    bool socket_connected() const noexcept;

    // ---- Multicast (UDP pipes). `interface` is an interface name ("lo", "eth0") or, for
    // IPv4, one of its addresses; empty: the system's choice. Errors name the call and group.
    // Joins `group` (any-source), or only `source`'s traffic to it (source-specific).
    Error join_group(const Address& group, std::string_view interface = {},
                     const Address& source = {});
    Error leave_group(const Address& group, std::string_view interface = {},
                      const Address& source = {});
    // Whether this pipe's own multicast comes back to the machine's sockets (default on).
    Error set_multicast_loop(bool on);
    // TTL / hop limit of multicast sent, 1-255 (default 1: the local network only).
    Error set_multicast_ttl(int ttl);
    // The interface multicast is sent on.
    Error set_multicast_interface(std::string_view interface);

    // TLS pipes: the session (version, cipher, ALPN, resumed, verified, peer); enabled is
    // false without TLS. Filled in once the handshake is done.
    TlsInfo tls_info() const;

    Pipe(const Pipe&) = delete;
    Pipe& operator=(const Pipe&) = delete;

protected:
    Pipe() = default;
    ~Pipe() = default;
};

}  // namespace pipeworks
