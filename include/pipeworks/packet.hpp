// PacketConnection: requests and responses over one stream pipe, in the wire format of the
// Python module cs.packetstream (docs/packets.md), so a pipeworks peer and a Python peer talk
// to each other.
//
// Each side may submit requests and answer the other's: a request carries an rq_type, flags
// and a payload on a channel; its response carries ok, flags and a payload. Many requests may
// be outstanding; responses come in any order and are matched by (channel, tag).
//
// Threading: a PacketConnection is bound to its loop's thread, like its pipe. Every member,
// every callback and every handler runs on that thread; a PacketResponder may be called later
// but on that thread too (Loop::post from elsewhere).
//
// Lifetime: shared-owned (PacketConnectionPtr). While it is open the library holds a
// reference, so dropping yours does not end it; close() does, in order. It ends exactly once:
// every request still waiting has had its result by then, and after the end callbacks no
// handler of it runs (a submit() made later still gets its refusal).
#pragma once

#include <pipeworks/error.hpp>
#include <pipeworks/export.hpp>
#include <pipeworks/pipe.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace pipeworks {

class Loop;
class PacketConnection;
namespace detail {
class PacketConnectionImpl;
}
using PacketConnectionPtr = std::shared_ptr<PacketConnection>;

// Configuration of a connection, validated when it is made.
struct PacketConf {
    // The largest packet body (tag, F, channel, rq_type and payload) either side may send:
    // 1 byte to 1 GiB. A longer one received ends the connection with errc::protocol_error,
    // decided from its length alone (the claimed size is never allocated); one longer to send
    // is refused with errc::message_too_large.
    std::size_t max_packet = 16 * 1024 * 1024;
    // How long a request waits for its response unless submit() says otherwise (then it fails
    // with errc::request_timeout); 0: forever.
    std::chrono::milliseconds request_timeout{0};
    // How long close() waits for local handlers and for the peer's EOF before it closes the
    // pipe anyway (what is still pending then fails with errc::close_timeout); 0: forever.
    std::chrono::milliseconds close_timeout{10000};

    // What one connection may make this side hold is bounded, whatever the peer sends: a
    // partial packet by max_packet, the responses queued for a peer that does not read by the
    // pipe's NetConf (read_backpressure, max_write_queue), and these:
    //
    // The peer's requests whose handlers answer later (PacketRequest::defer()) at once: 1 or
    // more. A request that arrives while that many wait ends the connection with
    // errc::protocol_error naming this field; only the peer decides how many it sends.
    std::size_t max_peer_requests = 1024;
    // This side's requests waiting for a response at once: 1 or more. A submit() beyond it is
    // refused with errc::queue_full, so a peer that stops answering cannot make them pile up.
    std::size_t max_outstanding = 65536;
    // A request that timed out or was cancelled is remembered until its late response comes,
    // to drop and count it (stats().late_responses). At most this many are remembered (0: none);
    // one abandoned beyond that is forgotten at once, and its response, should it come, is
    // counted as unmatched: a peer that never answers cannot grow the record.
    std::size_t max_abandoned = 1024;

    // An empty Error when valid, otherwise errc::invalid_config naming the field.
    PIPEWORKS_API Error validate() const;
};

// The outcome of a request, handed to its callback (and later to the co_await and blocking
// forms, which return it). Either an error, and no response; or the peer's response.
struct PacketResult {
    // No response: timeout (errc::request_timeout), cancel() (errc::request_cancelled),
    // close() gave up waiting (errc::close_timeout), the connection ended first
    // (errc::pipe_ended: "connection ended ..."), the peer broke the protocol
    // (errc::protocol_error), too many requests wait already (errc::queue_full,
    // PacketConf::max_outstanding), the connect function of an on-demand connection failed
    // (its Error, as it returned it), or the request could not be sent (its own code).
    Error error;
    bool ok = false;          // the peer's handler succeeded; false: a failure response
    std::uint64_t flags = 0;  // the response flags (0 in a failure response)
    std::string payload;      // the response payload; in a failure response, the reason text

    // True for a successful response.
    explicit operator bool() const noexcept { return !error && ok; }
};

// Receives a request's result, exactly once, on the loop thread, never inside submit(). It may
// move from the result.
using PacketCallback = std::function<void(PacketResult&)>;

// Names a request this side submitted: cancel() takes it.
struct RequestId {
    std::uint64_t channel = 0;
    std::uint64_t tag = 0;
    bool valid = false;  // false when submit() refused the request (its callback says why)
};

// What a handler answers with (the result types of cs.packetstream's handlers):
// - std::monostate{} (`return {};`): ok, flags 0, empty payload;
// - std::uint64_t (`return 5u;`, or std::uint64_t{5}): ok, those flags, empty payload;
// - std::string: ok, flags 0, these bytes;
// - std::u8string (`return u8"text";`): ok, flags 0, this UTF-8 text;
// - PacketReply: ok, its flags and payload;
// - PacketFailure: a failure response whose payload is the reason.
// A handler that throws gives a failure response with the exception's what() as the reason.
struct PacketReply {
    std::uint64_t flags = 0;
    std::string payload;
};
struct PacketFailure {
    std::string reason;
};
using HandlerResult = std::variant<std::monostate, std::uint64_t, std::string, std::u8string,
                                   PacketReply, PacketFailure>;

// Answers one request later: a handler gets it from PacketRequest::defer() and may move it
// anywhere (a timer, another pipe's callback) and call it on the loop thread. The first answer
// is sent; later ones are ignored (answer() returns false). Destroyed unanswered, it answers
// with a failure ("the handler never answered"). Once the connection has ended it does nothing.
class PIPEWORKS_API PacketResponder {
public:
    PacketResponder() = default;
    PacketResponder(PacketResponder&& other) noexcept;
    PacketResponder& operator=(PacketResponder&& other) noexcept;
    PacketResponder(const PacketResponder&) = delete;
    PacketResponder& operator=(const PacketResponder&) = delete;
    ~PacketResponder();

    // Sends the response. False when this responder has answered already, is empty, or its
    // connection can no longer send.
    bool answer(HandlerResult result);
    // The same as answer(PacketFailure{reason}).
    bool fail(std::string reason) { return answer(PacketFailure{std::move(reason)}); }
    // True until the first answer (and while the connection may still send).
    bool pending() const noexcept;

private:
    friend class detail::PacketConnectionImpl;
    PacketResponder(std::weak_ptr<detail::PacketConnectionImpl> conn, std::uint64_t channel,
                    std::uint64_t tag, std::uint64_t serial)
        : conn_(std::move(conn)), channel_(channel), tag_(tag), serial_(serial) {}
    std::weak_ptr<detail::PacketConnectionImpl> conn_;
    std::uint64_t channel_ = 0, tag_ = 0, serial_ = 0;
};

// One request as a handler sees it. Valid during the handler call only; copy what you keep.
class PIPEWORKS_API PacketRequest {
public:
    std::uint64_t type = 0;     // the API rq_type (the wire's minus one)
    std::uint64_t flags = 0;    // the request flags
    std::uint64_t channel = 0;  // the channel it came on
    std::uint64_t tag = 0;      // its tag on that channel
    std::string_view payload;   // its payload

    // The handler answers later, through the returned responder; what it returns is then
    // ignored. Call at most once (a second call returns an empty responder).
    PacketResponder defer();
    // The connection the request came on.
    PacketConnection& connection() const noexcept { return *conn_; }

private:
    friend class detail::PacketConnectionImpl;
    explicit PacketRequest(PacketConnection& conn) : conn_(&conn) {}
    PacketConnection* conn_;
    bool deferred_ = false;
};

using PacketHandler = std::function<HandlerResult(PacketRequest&)>;

// Counters of one connection.
struct PacketStats {
    std::uint64_t requests_sent = 0;        // submitted and queued on the pipe
    std::uint64_t responses_received = 0;   // matched to a request still waiting
    std::uint64_t requests_received = 0;    // handed to a handler or refused (EOF/ERQ excluded)
    std::uint64_t responses_sent = 0;       // answers of every kind, refusals and failures too
    std::uint64_t refused = 0;              // refusals: no handler, after ERQ
    std::uint64_t unmatched_responses = 0;  // responses for no request of ours: dropped
    std::uint64_t late_responses = 0;    // responses to requests that timed out or were cancelled
    std::uint64_t timeouts = 0;          // requests that timed out
    std::uint64_t unanswerable = 0;      // requests received after our EOF went out: dropped
    std::size_t outstanding = 0;         // our requests waiting for a response now
    std::size_t handlers_in_flight = 0;  // the peer's requests deferred and not yet answered
};

class PIPEWORKS_API PacketConnection : public std::enable_shared_from_this<PacketConnection> {
public:
    // Opens the connection to connect a pipe (TCP today; anything that carries a byte stream).
    // Called on first use: the first submit() (or start()). An Error it returns ends the
    // connection with that error, and every request submitted fails with it.
    using ConnectFn = std::function<Result<PipePtr>(Loop&)>;
    // The connection ended: `error` is empty after an orderly shutdown (both EOFs exchanged),
    // else why it ended (a protocol error, the pipe's end, a close timeout).
    using EndFn = std::function<void(PacketConnection&, const Error& error)>;

    // A connection over an open (or still connecting) stream pipe, which it takes over: it
    // sets the pipe's framer to the packet length framer (varint_be128, max_message =
    // conf.max_packet) and adds its own message and end callbacks. Errors: an invalid conf,
    // a server or UDP pipe (errc::wrong_pipe_kind), an ended pipe (errc::pipe_ended), a pipe
    // of another thread's loop.
    static Result<PacketConnectionPtr> open(const PipePtr& pipe, const PacketConf& conf = {});
    // A connection that calls `connect` on first use.
    static Result<PacketConnectionPtr> on_demand(Loop& loop, ConnectFn connect,
                                                 const PacketConf& conf = {});

    // ---- Requests this side makes.

    // Sends a request of API type `rq_type` (the wire's rq_type - 1) with `flags` (at most
    // 2^62 - 1) and `payload` on `channel`; `done` gets the result. `timeout` overrides
    // conf().request_timeout (0: none). The callback never runs inside submit(): a refused
    // request (after end_requests() or close(), once the connection ended, flags too large
    // (errc::invalid_config), a payload over max_packet (errc::message_too_large),
    // conf().max_outstanding requests already waiting (errc::queue_full)) gets its error in a
    // later loop iteration, with an invalid RequestId returned now.
    RequestId submit(std::uint64_t rq_type, std::uint64_t flags, std::string_view payload,
                     std::uint64_t channel, PacketCallback done,
                     std::optional<std::chrono::milliseconds> timeout = std::nullopt);
    // Channel 0, no flags.
    RequestId submit(std::uint64_t rq_type, std::string_view payload, PacketCallback done) {
        return submit(rq_type, 0, payload, 0, std::move(done));
    }
    // Gives up waiting: the callback runs now with errc::request_cancelled. The peer
    // still answers; that response is dropped (stats().late_responses). False when the request
    // is no longer waiting.
    bool cancel(RequestId id);

    // ---- Requests the peer makes.

    // Handles requests of API type `rq_type` (replacing a handler already there; an empty
    // function removes it). A request without a handler gets a failure response. A request
    // whose tag is still in use on its channel (an earlier one of the peer's, deferred and not
    // yet answered) ends the connection with errc::protocol_error.
    void handle(std::uint64_t rq_type, PacketHandler handler);

    // ---- Shutdown.

    // Sends ERQ: this side makes no more requests (later submits are refused). Responses and
    // the peer's requests still flow. Idempotent.
    void end_requests();
    // Shuts down in order: ERQ if not sent, then waits for the handlers still answering, sends
    // EOF last, and waits for the peer's EOF (or the pipe's end) before closing the pipe.
    // Responses to this side's requests are still taken until the peer's EOF; what is pending
    // then fails with errc::pipe_ended. Bounded by conf().close_timeout. Idempotent. The peer's
    // EOF starts the same sequence by itself.
    void close();
    // Connects an on-demand connection now (no-op otherwise).
    void start();

    // Runs once when the connection has ended (also when added after that: in a later
    // iteration). Returns a token for remove().
    CallbackId on_end(EndFn fn);
    bool remove(CallbackId id);

    // ---- State.
    bool ended() const noexcept;  // the end callbacks have run
    // Why it ended (empty Error for an orderly end); nullopt while open.
    std::optional<Error> end_error() const;
    bool requests_ended() const noexcept;       // end_requests() or close() was called
    bool peer_requests_ended() const noexcept;  // the peer's ERQ or EOF arrived
    // The pipe; null for an on-demand connection not yet used.
    PipePtr pipe() const;
    Loop& loop() const noexcept;
    const PacketConf& conf() const noexcept;
    PacketStats stats() const;

    PacketConnection(const PacketConnection&) = delete;
    PacketConnection& operator=(const PacketConnection&) = delete;

protected:
    PacketConnection() = default;
    ~PacketConnection() = default;
};

}  // namespace pipeworks
