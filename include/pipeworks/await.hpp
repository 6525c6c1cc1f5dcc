// co::: the pipeworks operations as awaitables for a Task (task.hpp), P2PD's await style:
// `auto pipe = co_await co::connect(loop, "host:port")`, `co_await co::send(pipe, bytes)`,
// `auto r = co_await co::recv(pipe, timeout)`. Each is a thin adapter over the callback API
// (Pipe, Loop::call_later, PacketConnection::submit) and behaves as it does.
//
// Threading: loop-thread-bound, like the pipes and the Task they run in. An awaitable is made
// and awaited in one expression (`co_await co::recv(p)`); it is not to be stored or awaited
// twice. Views it takes (bytes, payloads) must stay valid until the co_await starts; the
// operation copies them there.
//
// Results (docs/await.md): the callback API's own types. Opening: Result<PipePtr>. accept:
// AcceptResult. recv, send_recv: RecvResult (message, timeout, finished = the peer's FIN, or
// ended with the EndInfo). send, shutdown, close, sleep: Error (empty on success). request:
// PacketResult.
//
// A wait that ends before its operation does, ends with a status of its own:
// - the task was cancelled (TaskHandle::cancel): errc::cancelled;
// - the Loop was destroyed: errc::loop_closed;
// - a co::deadline passed: errc::deadline_passed; recv, send_recv and accept report
//   Status::timeout instead, as their own timeout would.
// An Error result carries that code; a RecvResult or AcceptResult has Status::ended with
// EndInfo{local_close, that Error}; a PacketResult has it as its error. Once a task is
// cancelled, or its loop is being destroyed, every later co_await completes at once that way
// and starts nothing. Interrupting never takes back what was sent: bytes send() accepted still
// go out. A cancelled wait in recv or accept leaves the pipe's own wait in place (the callback
// API has no way to withdraw it): a message or client that then arrives for it is dropped (a
// client closed); a co::deadline does not lose anything that way (it becomes the wait's own
// timeout).
#pragma once

#include <pipeworks/error.hpp>
#include <pipeworks/export.hpp>
#include <pipeworks/loop.hpp>
#include <pipeworks/packet.hpp>
#include <pipeworks/pipe.hpp>
#include <pipeworks/task.hpp>

#include <algorithm>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace pipeworks {

namespace detail {

// The completion an operation's callback holds: the chain and which of its waits it ends.
// Loop-thread-bound.
class Wake {
public:
    Wake(ChainRef c, std::uint64_t gen) noexcept : chain_(std::move(c)), gen_(gen) {}
    // If the wait is still suspended: fill(awaiter) sets its result, then the task resumes
    // (inside this call). Returns false for a wait already over, and fill does not run.
    template <class A, class Fill>
    bool operator()(Fill&& fill) const {
        Suspended* s = chain_->take(gen_);
        if (s == nullptr) return false;
        auto* a = static_cast<A*>(s);
        fill(*a);
        a->coroutine.resume();
        return true;
    }
    const ChainRef& chain() const noexcept { return chain_; }
    std::uint64_t generation() const noexcept { return gen_; }

private:
    ChainRef chain_;
    std::uint64_t gen_;
};

// The part every awaiter shares (each awaiter is loop-thread-bound). Derived provides:
//   bool start(Wake w): starts the operation; false when it completed at once (result_ set);
//   R interrupted_result(Interrupt why): the result of a wait ended early;
//   void detach() noexcept: stops the operation of a wait ended early (not on loop close);
//   optionally limit(ms): co::deadline passes its time to the operation's own timeout.
template <class Derived, class R>
class Awaiter : public Suspended {
public:
    using result_type = R;

    bool await_ready() noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        static_assert(std::is_base_of_v<PromiseBase, P>,
                      "pipeworks awaitables are awaited inside a pipeworks Task");
        const ChainRef& chain = h.promise().chain;
        if (loop_closing(*loop_)) return finish_now(Interrupt::loop_closed);
        if (chain->cancelled()) return finish_now(Interrupt::cancelled);
        coroutine = h;
        chain_ = chain;
        gen_ = chain->suspend(*loop_, this);
        bool suspended = false;
        try {
            suspended = self().start(Wake(chain_, gen_));
        } catch (...) {
            chain->take(gen_);
            throw;
        }
        if (!suspended) chain->take(gen_);
        return suspended;
    }
    R await_resume() { return std::move(*result_); }

    void interrupted(Interrupt why) noexcept override {
        if (why != Interrupt::loop_closed) self().detach();
        result_.emplace(self().interrupted_result(why));
    }
    // For co::deadline: the wait under way, or an empty chain when none.
    const ChainRef& chain() const noexcept { return chain_; }
    std::uint64_t generation() const noexcept { return gen_; }
    Loop& loop() const noexcept { return *loop_; }

protected:
    explicit Awaiter(Loop& loop) noexcept : loop_(&loop) {}
    Derived& self() noexcept { return static_cast<Derived&>(*this); }
    bool finish_now(Interrupt why) {
        result_.emplace(self().interrupted_result(why));
        return false;
    }
    void detach() noexcept {}

    Loop* loop_;
    std::optional<R> result_;
    ChainRef chain_;
    std::uint64_t gen_ = 0;
};

// The RecvResult / AcceptResult of a wait ended early.
template <class Res>
Res interrupted_wait(Interrupt why, std::string_view what) {
    Res r;
    if (why == Interrupt::deadline) {
        r.status = RecvResult::Status::timeout;
    } else {
        r.status = RecvResult::Status::ended;
        r.end = EndInfo{EndReason::local_close, interrupt_error(why, what)};
    }
    return r;
}

inline std::chrono::milliseconds shorter(std::optional<std::chrono::milliseconds> a,
                                         std::chrono::milliseconds fallback,
                                         std::chrono::milliseconds b) {
    return std::min(a.value_or(fallback), b);
}

// The Error of a pipe's end: empty for an orderly one (local_close or peer_close, no error).
PIPEWORKS_API Error end_error(const Pipe& pipe, std::string_view what);

// Pipe::connect and friends: resumes once the pipe is up, or with its end's error.
class PIPEWORKS_API ConnectAwaiter final : public Awaiter<ConnectAwaiter, Result<PipePtr>> {
public:
    // `open` makes the pipe (a Pipe::connect call); `what` names it in errors.
    ConnectAwaiter(Loop& loop, std::function<Result<PipePtr>()> open, std::string what)
        : Awaiter(loop), open_(std::move(open)), what_(std::move(what)) {}
    bool start(Wake w);
    Result<PipePtr> interrupted_result(Interrupt why) const { return interrupt_error(why, what_); }
    void detach() noexcept;

private:
    void unwatch() noexcept;
    std::function<Result<PipePtr>()> open_;
    std::string what_;
    PipePtr pipe_;
    CallbackId up_ = 0, end_ = 0;
};

// A synchronous open (listen, UDP): ready at once.
class ReadyAwaiter final : public Awaiter<ReadyAwaiter, Result<PipePtr>> {
public:
    ReadyAwaiter(Loop& loop, Result<PipePtr> r) : Awaiter(loop), r_(std::move(r)) {}
    bool start(const Wake&) {
        result_.emplace(std::move(r_));
        return false;
    }
    Result<PipePtr> interrupted_result(Interrupt why) {
        if (r_) (*r_)->close();  // never handed over
        return interrupt_error(why, "open");
    }

private:
    Result<PipePtr> r_;
};

class PIPEWORKS_API AcceptAwaiter final : public Awaiter<AcceptAwaiter, AcceptResult> {
public:
    AcceptAwaiter(PipePtr server, std::optional<std::chrono::milliseconds> timeout)
        : Awaiter(server->loop()), server_(std::move(server)), timeout_(timeout) {}
    bool start(Wake w);
    AcceptResult interrupted_result(Interrupt why) const {
        return interrupted_wait<AcceptResult>(why, "accept");
    }
    void limit(std::chrono::milliseconds d) {
        timeout_ = shorter(timeout_, server_->conf().recv_timeout, d);
    }

private:
    PipePtr server_;
    std::optional<std::chrono::milliseconds> timeout_;
};

class PIPEWORKS_API RecvAwaiter final : public Awaiter<RecvAwaiter, RecvResult> {
public:
    RecvAwaiter(PipePtr pipe, SubId sub, std::optional<std::chrono::milliseconds> timeout)
        : Awaiter(pipe->loop()), pipe_(std::move(pipe)), sub_(sub), timeout_(timeout) {}
    bool start(Wake w);
    RecvResult interrupted_result(Interrupt why) const {
        return interrupted_wait<RecvResult>(why, "recv");
    }
    void limit(std::chrono::milliseconds d) {
        timeout_ = shorter(timeout_, pipe_->conf().recv_timeout, d);
    }

private:
    PipePtr pipe_;
    SubId sub_;
    std::optional<std::chrono::milliseconds> timeout_;
};

class PIPEWORKS_API SendRecvAwaiter final : public Awaiter<SendRecvAwaiter, RecvResult> {
public:
    SendRecvAwaiter(PipePtr pipe, std::string_view bytes, SubId sub,
                    std::optional<std::chrono::milliseconds> timeout, Address to)
        : Awaiter(pipe->loop()),
          pipe_(std::move(pipe)),
          bytes_(bytes),
          sub_(sub),
          timeout_(timeout),
          to_(std::move(to)) {}
    bool start(Wake w);
    RecvResult interrupted_result(Interrupt why) const {
        return interrupted_wait<RecvResult>(why, "send_recv");
    }
    // The retries keep their count: each attempt waits the shorter time.
    void limit(std::chrono::milliseconds d) {
        timeout_ = shorter(timeout_, pipe_->conf().recv_timeout, d);
    }

private:
    PipePtr pipe_;
    std::string_view bytes_;
    SubId sub_;
    std::optional<std::chrono::milliseconds> timeout_;
    Address to_;
};

// send / send_to: resumes at once when the pipe stays writable, else once its queue drains.
class PIPEWORKS_API SendAwaiter final : public Awaiter<SendAwaiter, Error> {
public:
    SendAwaiter(PipePtr pipe, std::string_view bytes, Address to)
        : Awaiter(pipe->loop()), pipe_(std::move(pipe)), bytes_(bytes), to_(std::move(to)) {}
    bool start(Wake w);
    Error interrupted_result(Interrupt why) const { return interrupt_error(why, "send"); }
    void detach() noexcept;

private:
    void unwatch() noexcept;
    PipePtr pipe_;
    std::string_view bytes_;
    Address to_;
    CallbackId drain_ = 0, end_ = 0;
};

// shutdown (FIN, then the pipe's end) and close (the handle closed).
class PIPEWORKS_API EndAwaiter final : public Awaiter<EndAwaiter, Error> {
public:
    EndAwaiter(PipePtr pipe, bool shutdown)
        : Awaiter(pipe->loop()), pipe_(std::move(pipe)), shutdown_(shutdown) {}
    bool start(Wake w);
    Error interrupted_result(Interrupt why) const {
        return interrupt_error(why, shutdown_ ? "shutdown" : "close");
    }
    void detach() noexcept;

private:
    PipePtr pipe_;
    bool shutdown_;
    CallbackId end_ = 0;
};

class PIPEWORKS_API SleepAwaiter final : public Awaiter<SleepAwaiter, Error> {
public:
    SleepAwaiter(Loop& loop, std::chrono::milliseconds d) : Awaiter(loop), delay_(d) {}
    bool start(Wake w);
    Error interrupted_result(Interrupt why) const { return interrupt_error(why, "sleep"); }
    void detach() noexcept { timer_.cancel(); }

private:
    std::chrono::milliseconds delay_;
    Timer timer_;
};

class PIPEWORKS_API RequestAwaiter final : public Awaiter<RequestAwaiter, PacketResult> {
public:
    RequestAwaiter(PacketConnectionPtr conn, std::uint64_t type, std::uint64_t flags,
                   std::string_view payload, std::uint64_t channel,
                   std::optional<std::chrono::milliseconds> timeout)
        : Awaiter(conn->loop()),
          conn_(std::move(conn)),
          type_(type),
          flags_(flags),
          payload_(payload),
          channel_(channel),
          timeout_(timeout) {}
    bool start(Wake w);
    PacketResult interrupted_result(Interrupt why) const {
        PacketResult r;
        r.error = interrupt_error(why, "request");
        return r;
    }
    void detach() noexcept;
    void limit(std::chrono::milliseconds d) {
        // 0 means no timeout, so it is not the shorter one.
        auto t = timeout_.value_or(conn_->conf().request_timeout);
        timeout_ = t.count() == 0 ? d : std::min(t, d);
    }

private:
    PacketConnectionPtr conn_;
    std::uint64_t type_, flags_;
    std::string_view payload_;
    std::uint64_t channel_;
    std::optional<std::chrono::milliseconds> timeout_;
    RequestId id_;
};

template <class A>
concept PipeworksAwaiter =
    std::is_base_of_v<Awaiter<A, typename A::result_type>, A> && !std::is_reference_v<A>;

// co::deadline's awaiter: the inner wait, and a timer that ends it (unless the inner
// operation takes the time as its own timeout).
template <PipeworksAwaiter A>
class DeadlineAwaiter {
public:
    DeadlineAwaiter(A inner, std::chrono::milliseconds d) : inner_(std::move(inner)), d_(d) {
        if constexpr (requires { inner_.limit(d); }) inner_.limit(d);
    }
    bool await_ready() noexcept { return inner_.await_ready(); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
        if (!inner_.await_suspend(h)) return false;
        if constexpr (!requires { inner_.limit(d_); }) {
            timer_ = inner_.loop().call_later(d_, [c = inner_.chain(), gen = inner_.generation()] {
                c->interrupt(gen, Interrupt::deadline);
            });
        }
        return true;
    }
    auto await_resume() {
        timer_.cancel();
        return inner_.await_resume();
    }

private:
    A inner_;
    std::chrono::milliseconds d_;
    Timer timer_;
};

}  // namespace detail

namespace co {

using Duration = std::chrono::milliseconds;

// ---- Opening (Result<PipePtr>).

// Pipe::connect; resumes once the connection is up (TLS: handshake done), or with the error
// it ended with (refused, con_timeout, TLS failure). The pipe has no callbacks of this call's
// left: recv() takes every message.
inline detail::ConnectAwaiter connect(Loop& loop, const Address& to, const NetConf& conf,
                                      const Address& local = Address()) {
    return detail::ConnectAwaiter(
        loop, [&loop, to, conf, local] { return Pipe::connect(loop, to, conf, local); },
        "connect to " + to.to_string());
}
// Pipe::connect by "host:port" (resolved on the loop, NetConf::dns_timeout), the same way.
inline detail::ConnectAwaiter connect(Loop& loop, std::string_view host_port, const NetConf& conf,
                                      const Address& local = Address()) {
    return detail::ConnectAwaiter(
        loop,
        [&loop, hp = std::string(host_port), conf, local] {
            return Pipe::connect(loop, hp, conf, local);
        },
        "connect to " + std::string(host_port));
}
// The same with a default NetConf. (Overloads, not default arguments: GCC 12 destroys a class
// temporary made by a default argument twice in a co_await expression.)
inline detail::ConnectAwaiter connect(Loop& loop, const Address& to) {
    return connect(loop, to, NetConf());
}
inline detail::ConnectAwaiter connect(Loop& loop, std::string_view host_port) {
    return connect(loop, host_port, NetConf());
}
// Pipe::listen: ready at once (a server is open when listen() returns).
inline detail::ReadyAwaiter listen(Loop& loop, const Address& local, const NetConf& conf) {
    return detail::ReadyAwaiter(loop, Pipe::listen(loop, local, conf));
}
inline detail::ReadyAwaiter listen(Loop& loop, const Address& local) {
    return listen(loop, local, NetConf());
}
// Pipe::udp: ready at once.
inline detail::ReadyAwaiter udp(Loop& loop, const Address& local, const Address& dest,
                                const NetConf& conf) {
    return detail::ReadyAwaiter(loop, Pipe::udp(loop, local, dest, conf));
}
inline detail::ReadyAwaiter udp(Loop& loop, const Address& local, const Address& dest) {
    return udp(loop, local, dest, NetConf());
}
inline detail::ReadyAwaiter udp(Loop& loop, const Address& local) {
    return udp(loop, local, Address(), NetConf());
}

// ---- Servers.

// The next accepted pipe (AcceptResult): a pipe, Status::timeout after `timeout` (default the
// server's conf().recv_timeout), or Status::ended when the server ends.
inline detail::AcceptAwaiter accept(const PipePtr& server,
                                    std::optional<Duration> timeout = std::nullopt) {
    return detail::AcceptAwaiter(server, timeout);
}

// ---- Receiving (RecvResult).

// The next message of `sub` (Pipe::recv): a message; Status::timeout after `timeout` (default
// conf().recv_timeout); Status::finished once the peer sent FIN and nothing is queued (the
// pipe can still send); Status::ended with the EndInfo when the pipe ends.
inline detail::RecvAwaiter recv(const PipePtr& pipe, SubId sub = all_messages,
                                std::optional<Duration> timeout = std::nullopt) {
    return detail::RecvAwaiter(pipe, sub, timeout);
}
inline detail::RecvAwaiter recv(const PipePtr& pipe, Duration timeout) {
    return detail::RecvAwaiter(pipe, all_messages, timeout);
}
// Pipe::send_recv: sends `bytes`, then the reply as recv() gives it (UDP resends on each
// timeout, up to conf().send_retry times). A send refused at once: Status::ended with
// EndInfo{local_close, its Error}.
inline detail::SendRecvAwaiter send_recv(const PipePtr& pipe, std::string_view bytes, SubId sub,
                                         std::optional<Duration> timeout, const Address& to) {
    return detail::SendRecvAwaiter(pipe, bytes, sub, timeout, to);
}
inline detail::SendRecvAwaiter send_recv(const PipePtr& pipe, std::string_view bytes,
                                         SubId sub = all_messages,
                                         std::optional<Duration> timeout = std::nullopt) {
    return detail::SendRecvAwaiter(pipe, bytes, sub, timeout, Address());
}

// ---- Sending (Error).

// Pipe::send, with backpressure: the bytes are queued at once (or refused: that Error); the
// task resumes at once while the write queue stays below conf().high_watermark, else once it
// has drained to low_watermark (on_drain), or with errc::pipe_ended when the pipe ends first.
inline detail::SendAwaiter send(const PipePtr& pipe, std::string_view bytes) {
    return detail::SendAwaiter(pipe, bytes, {});
}
// Pipe::send_to (UDP), the same way.
inline detail::SendAwaiter send_to(const PipePtr& pipe, std::string_view bytes, const Address& to) {
    return detail::SendAwaiter(pipe, bytes, to);
}
// Pipe::shutdown: FIN once the queue has gone out; resumes when the pipe has ended (the peer
// finished too): empty for an orderly end, else its error. Refusals as shutdown() returns them.
inline detail::EndAwaiter shutdown(const PipePtr& pipe) {
    return detail::EndAwaiter(pipe, true);
}
// Pipe::close: resumes once the handle is closed: empty for an orderly end, else its error
// (errc::close_timeout when queued bytes could not go out in time).
inline detail::EndAwaiter close(const PipePtr& pipe) {
    return detail::EndAwaiter(pipe, false);
}

// ---- Time.

// Loop::call_later: resumes after `d` with an empty Error.
inline detail::SleepAwaiter sleep(Loop& loop, Duration d) {
    return detail::SleepAwaiter(loop, d);
}

// ---- Packets (PacketResult).

// PacketConnection::submit: the response, or the request's error (see PacketResult).
inline detail::RequestAwaiter request(const PacketConnectionPtr& conn, std::uint64_t rq_type,
                                      std::string_view payload, std::uint64_t flags = 0,
                                      std::uint64_t channel = 0,
                                      std::optional<Duration> timeout = std::nullopt) {
    return detail::RequestAwaiter(conn, rq_type, flags, payload, channel, timeout);
}

// ---- Deadlines.

// Any awaitable above, bounded by `d`: when it passes first, the wait ends with
// errc::deadline_passed (recv, send_recv, accept: Status::timeout; request:
// errc::request_timeout, the request's own timeout). `co_await co::deadline(co::connect(...),
// 500ms)`.
template <detail::PipeworksAwaiter A>
detail::DeadlineAwaiter<A> deadline(A awaitable, Duration d) {
    return detail::DeadlineAwaiter<A>(std::move(awaitable), d);
}

}  // namespace co

}  // namespace pipeworks
