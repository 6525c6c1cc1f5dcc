// pipeworks::sync: the blocking facade. Pipes, servers and packet connections for plain threads,
// driving the callback API on a private Loop that runs on a thread of its own.
//
// Threading: every class here is thread-safe. Any thread may call any member, several at once;
// each call blocks only its caller, and calls made on one object run on the private loop in the
// order they were made. A call made on a thread that is running a Loop (inside Loop::run*(),
// a callback included) would stall that loop, so it is refused at once with
// errc::blocking_on_loop_thread.
//
// Time: every blocking call takes a timeout and returns by then (plus a short grace for the
// private loop to answer); one that passes returns errc::sync_timeout unless the operation has
// its own code for it (recv's status timeout, request's errc::request_timeout).
//
// The private loop's thread starts with the first sync object and stops when the last one is
// gone (its destructor waits for that thread, so at most for the close_timeout of the pipes
// being closed); the next sync object starts it again.
#pragma once

#include <pipeworks/address.hpp>
#include <pipeworks/error.hpp>
#include <pipeworks/export.hpp>
#include <pipeworks/net_conf.hpp>
#include <pipeworks/packet.hpp>
#include <pipeworks/pipe.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>

namespace pipeworks {

namespace detail {
class SyncEngine;
struct SyncPipeState;
struct SyncServerState;
struct SyncPacketState;
struct SyncAccess;
}  // namespace detail

namespace sync {

using std::chrono::milliseconds;

// The timeout of the calls that do not take one from the caller.
inline constexpr milliseconds default_timeout{10000};

// A blocking TCP connection: a client this side opened, or one a Server accepted.
// Messages are framed as NetConf::framer says (raw by default: what one read brings) and
// queued on arrival, so none is lost between recv() calls. The queue is bounded: above half of
// NetConf::max_queue_bytes (1 MiB when that is 0) the pipe stops reading, and TCP's flow
// control holds the peer back until recv() has taken enough.
class PIPEWORKS_API Pipe {
public:
    // An empty pipe: every call fails with errc::pipe_ended.
    Pipe() = default;
    // Closes the connection if close() was not called (without waiting for it to end).
    ~Pipe();
    Pipe(Pipe&&) noexcept = default;
    Pipe& operator=(Pipe&&) noexcept = default;

    // Connects to `to` and returns once connected. Errors: the conf's validation, the
    // connection's failure (refused, errc::connect_timeout after conf.con_timeout), or
    // errc::sync_timeout when `timeout` passes first.
    static Result<Pipe> connect(const Address& to, const NetConf& conf = {},
                                milliseconds timeout = default_timeout);
    // Connects to "host:port" ("[v6]:port"): the name is resolved as Pipe::connect does
    // (bounded by conf.dns_timeout), every address tried (Happy Eyeballs).
    static Result<Pipe> connect(std::string_view host_port, const NetConf& conf = {},
                                milliseconds timeout = default_timeout);

    // Queues `bytes` (one message, framed by the pipe's framer) for the peer. While the pipe's
    // write queue is above conf().high_watermark it first waits for it to drain; when `timeout`
    // passes first nothing is queued and errc::sync_timeout is returned. An empty Error means
    // the bytes were accepted: they reach the peer, or close()'s EndInfo says they did not.
    Error send(std::string_view bytes, milliseconds timeout = default_timeout);
    // The next message, waiting up to `timeout`: status message, timeout, finished (the peer
    // sent FIN and every message before it was taken; send() still works), or ended (with why).
    RecvResult recv(milliseconds timeout);
    // A request and its reply in one call (P2PD's send_recv, for TCP): send(bytes), then the
    // next message as recv() gives it, `timeout` bounding each. The Error is send()'s when it
    // refused the bytes (then nothing waits for a reply).
    Result<RecvResult> send_recv(std::string_view bytes, milliseconds timeout);
    // Sends FIN once what is queued has gone out; send() is refused afterwards, recv() goes on.
    Error shutdown(milliseconds timeout = default_timeout);
    // Closes the connection (queued bytes still go out, for at most conf().close_timeout) and
    // waits for its end: the EndInfo says why it ended and how many bytes were never sent.
    // errc::sync_timeout if it has not ended within `timeout`. Later calls return the same.
    Result<EndInfo> close(milliseconds timeout = default_timeout);

    // The addresses of the connection, as they were when it was made.
    const Address& local_address() const noexcept { return local_; }
    const Address& peer_address() const noexcept { return peer_; }
    // False for an empty (or moved-from) pipe.
    explicit operator bool() const noexcept { return state_ != nullptr; }

private:
    friend struct detail::SyncAccess;
    Pipe(std::shared_ptr<detail::SyncPipeState> state, Address local, Address peer)
        : state_(std::move(state)), local_(std::move(local)), peer_(std::move(peer)) {}
    std::shared_ptr<detail::SyncPipeState> state_;
    Address local_, peer_;
};

// A blocking TCP server: accept() hands out each connection as a sync::Pipe, in accept order.
// Connections wait for accept() in a queue bounded by NetConf::max_accept_queue.
class PIPEWORKS_API Server {
public:
    Server() = default;
    // Closes the server if close() was not called (without waiting).
    ~Server();
    Server(Server&&) noexcept = default;
    Server& operator=(Server&&) noexcept = default;

    // Listens on `local` (port 0: the OS picks one; see local_address()). Errors: the conf's
    // validation, bind and listen failures, errc::sync_timeout.
    static Result<Server> listen(const Address& local, const NetConf& conf = {},
                                 milliseconds timeout = default_timeout);

    // The next connection, waiting up to `timeout`: errc::sync_timeout when none came,
    // errc::pipe_ended (with the server's end) once the server has ended.
    Result<Pipe> accept(milliseconds timeout);
    // Stops listening and closes the connections not yet accepted, and the accepted ones
    // (a server closes its pipes), then waits for the server's end, up to `timeout`.
    Error close(milliseconds timeout = default_timeout);

    const Address& local_address() const noexcept { return local_; }
    explicit operator bool() const noexcept { return state_ != nullptr; }

private:
    std::shared_ptr<detail::SyncServerState> state_;
    Address local_;
};

// A blocking client of the packet layer (PacketConnection): requests and their responses over
// one TCP connection. Several threads may request through one connection at once.
class PIPEWORKS_API PacketConnection {
public:
    PacketConnection() = default;
    // Closes the connection in order if close() was not called (without waiting).
    ~PacketConnection();
    PacketConnection(PacketConnection&&) noexcept = default;
    PacketConnection& operator=(PacketConnection&&) noexcept = default;

    // Connects to `to` (or "host:port") and returns once connected; errors as Pipe::connect,
    // and PacketConf::validate()'s.
    static Result<PacketConnection> connect(const Address& to, const NetConf& conf = {},
                                            const PacketConf& packet_conf = {},
                                            milliseconds timeout = default_timeout);
    static Result<PacketConnection> connect(std::string_view host_port, const NetConf& conf = {},
                                            const PacketConf& packet_conf = {},
                                            milliseconds timeout = default_timeout);

    // Sends a request and waits for its response, up to `timeout` (then errc::request_timeout,
    // and a late response is dropped). The result is PacketConnection::submit()'s.
    PacketResult request(std::uint64_t rq_type, std::uint64_t flags, std::string_view payload,
                         std::uint64_t channel = 0, milliseconds timeout = default_timeout);
    PacketResult request(std::uint64_t rq_type, std::string_view payload,
                         milliseconds timeout = default_timeout) {
        return request(rq_type, 0, payload, 0, timeout);
    }
    // Shuts down in order (ERQ, EOF, the peer's EOF; bounded by PacketConf::close_timeout) and
    // waits for the end, up to `timeout`: an empty Error after an orderly end, else why not.
    Error close(milliseconds timeout = default_timeout);

    const Address& local_address() const noexcept { return local_; }
    const Address& peer_address() const noexcept { return peer_; }
    explicit operator bool() const noexcept { return state_ != nullptr; }

private:
    std::shared_ptr<detail::SyncPacketState> state_;
    Address local_, peer_;
};

// Whether the facade's private loop thread is running now (while any sync object exists).
PIPEWORKS_API bool running() noexcept;

}  // namespace sync
}  // namespace pipeworks
