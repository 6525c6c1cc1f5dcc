// sync::Pipe and sync::Server: blocking calls handed over to the facade's loop.
#include <pipeworks/loop.hpp>
#include <pipeworks/sync.hpp>

#include "sync/pipe_side.hpp"

#include <string>
#include <utility>

namespace pipeworks {
namespace detail {

// The loop half of a blocking server. Loop-thread only.
struct SyncServerSide {
    PipePtr server;
    EndWatch<EndInfo> end;
    void close() {
        if (server) server->close();
    }
};

// The user's half of a blocking server.
struct SyncServerState : SyncHalf<SyncServerSide> {
    using SyncHalf::SyncHalf;
};

// What the sync classes' private members need from this file.
struct SyncAccess {
    static sync::Pipe make_pipe(std::shared_ptr<SyncEngine> engine, SyncOpened opened) {
        return sync::Pipe(
            std::make_shared<SyncPipeState>(std::move(engine), std::move(opened.side)),
            std::move(opened.local), std::move(opened.peer));
    }
};

namespace {

void close_late(Result<SyncOpened>& late) {
    if (late) late->side->pipe->close();
}

// Opens a client with open(loop) on the facade's loop and waits until it is up.
template <class Open>
Result<sync::Pipe> connect_with(const char* what, std::chrono::milliseconds timeout, Open open) {
    if (Error e = refuse_on_loop_thread(what)) return e;
    auto engine = SyncEngine::acquire();
    Loop& loop = engine->loop();
    auto got = sync_call<Result<SyncOpened>>(
        *engine, timeout,
        [&loop, open = std::move(open), timeout, what](auto done) {
            Result<PipePtr> r = open(loop);
            if (!r) {
                done(Result<SyncOpened>(r.error()));
                return;
            }
            await_up(loop, *r, timeout, what, [done](Result<PipePtr> up) {
                if (!up) {
                    done(Result<SyncOpened>(up.error()));
                    return;
                }
                const PipePtr& p = *up;
                done(Result<SyncOpened>(
                    SyncOpened{SyncPipeSide::attach(p), p->local_address(), p->peer_address()}));
            });
        },
        close_late);
    if (!got) return sync_timeout_error(what, timeout);
    if (!*got) return got->error();
    return SyncAccess::make_pipe(std::move(engine), std::move(got->value()));
}

Error empty_error(const char* what) {
    return Error(errc::pipe_ended, std::string(what) + ": empty (never opened, or moved from)");
}

}  // namespace
}  // namespace detail

namespace sync {

using detail::refuse_on_loop_thread;
using detail::sync_call;
using detail::sync_timeout_error;

Pipe::~Pipe() = default;

Result<Pipe> Pipe::connect(const Address& to, const NetConf& conf, milliseconds timeout) {
    return detail::connect_with("sync::Pipe::connect", timeout, [to, conf](Loop& loop) {
        return pipeworks::Pipe::connect(loop, to, conf);
    });
}

Result<Pipe> Pipe::connect(std::string_view host_port, const NetConf& conf, milliseconds timeout) {
    return detail::connect_with("sync::Pipe::connect", timeout,
                                [hp = std::string(host_port), conf](Loop& loop) {
                                    return pipeworks::Pipe::connect(loop, hp, conf);
                                });
}

Error Pipe::send(std::string_view bytes, milliseconds timeout) {
    constexpr const char* what = "sync::Pipe::send";
    if (Error e = refuse_on_loop_thread(what)) return e;
    if (!state_) return detail::empty_error(what);
    auto got =
        sync_call<Error>(*state_->engine, timeout,
                         [side = state_->side, bytes = std::string(bytes), timeout](
                             auto done) mutable { side->send(std::move(bytes), timeout, done); });
    if (!got) return sync_timeout_error(what, timeout);
    return std::move(*got);
}

RecvResult Pipe::recv(milliseconds timeout) {
    constexpr const char* what = "sync::Pipe::recv";
    auto refused = [](Error e) {
        RecvResult r;
        r.status = RecvResult::Status::ended;
        r.end.error = std::move(e);
        return r;
    };
    if (Error e = refuse_on_loop_thread(what)) return refused(std::move(e));
    if (!state_) return refused(detail::empty_error(what));
    auto got = sync_call<RecvResult>(
        *state_->engine, timeout,
        [side = state_->side, timeout](auto done) { side->recv(timeout, done); });
    if (!got) return RecvResult{};  // status timeout
    return std::move(*got);
}

Result<RecvResult> Pipe::send_recv(std::string_view bytes, milliseconds timeout) {
    constexpr const char* what = "sync::Pipe::send_recv";
    if (Error e = refuse_on_loop_thread(what)) return e;
    if (!state_) return detail::empty_error(what);
    // One hand-over for both halves: the reply is awaited on the loop as soon as the send is in.
    auto got = sync_call<Result<RecvResult>>(
        *state_->engine, timeout + timeout,
        [side = state_->side, bytes = std::string(bytes), timeout](auto done) mutable {
            side->send(std::move(bytes), timeout, [side, timeout, done](Error e) {
                if (e) {
                    done(Result<RecvResult>(std::move(e)));
                    return;
                }
                side->recv(timeout,
                           [done](RecvResult r) { done(Result<RecvResult>(std::move(r))); });
            });
        });
    if (!got) return sync_timeout_error(what, timeout + timeout);
    return std::move(*got);
}

Error Pipe::shutdown(milliseconds timeout) {
    constexpr const char* what = "sync::Pipe::shutdown";
    if (Error e = refuse_on_loop_thread(what)) return e;
    if (!state_) return detail::empty_error(what);
    auto got = sync_call<Error>(*state_->engine, timeout,
                                [side = state_->side](auto done) { done(side->pipe->shutdown()); });
    if (!got) return sync_timeout_error(what, timeout);
    return std::move(*got);
}

Result<EndInfo> Pipe::close(milliseconds timeout) {
    constexpr const char* what = "sync::Pipe::close";
    if (Error e = refuse_on_loop_thread(what)) return e;
    if (!state_) return detail::empty_error(what);
    auto got = sync_call<Result<EndInfo>>(
        *state_->engine, timeout, [side = state_->side, timeout](auto done) {
            detail::close_and_wait<Result<EndInfo>>(
                side->pipe->loop(), timeout, what, done, side->end, [&] { side->pipe->close(); },
                [](const EndInfo& e) { return Result<EndInfo>(e); });
        });
    if (!got) return sync_timeout_error(what, timeout);
    return std::move(*got);
}

Server::~Server() = default;

Result<Server> Server::listen(const Address& local, const NetConf& conf, milliseconds timeout) {
    constexpr const char* what = "sync::Server::listen";
    if (Error e = refuse_on_loop_thread(what)) return e;
    auto engine = detail::SyncEngine::acquire();
    using Opened = std::pair<std::shared_ptr<detail::SyncServerSide>, Address>;
    auto got = sync_call<Result<Opened>>(
        *engine, timeout,
        [&loop = engine->loop(), local, conf](auto done) {
            auto r = pipeworks::Pipe::listen(loop, local, conf);
            if (!r) {
                done(Result<Opened>(r.error()));
                return;
            }
            auto side = std::make_shared<detail::SyncServerSide>();
            side->server = *r;
            std::weak_ptr<detail::SyncServerSide> weak = side;
            side->server->on_end([weak](pipeworks::Pipe&, const EndInfo& e) {
                if (auto s = weak.lock()) s->end.ended(e);
            });
            done(Result<Opened>(Opened{side, side->server->local_address()}));
        },
        [](Result<Opened>& late) {
            if (late) late->first->server->close();
        });
    if (!got) return sync_timeout_error(what, timeout);
    if (!*got) return got->error();
    Server s;
    s.state_ =
        std::make_shared<detail::SyncServerState>(std::move(engine), std::move(got->value().first));
    s.local_ = got->value().second;
    return s;
}

Result<Pipe> Server::accept(milliseconds timeout) {
    constexpr const char* what = "sync::Server::accept";
    if (Error e = refuse_on_loop_thread(what)) return e;
    if (!state_) return detail::empty_error(what);
    using detail::SyncOpened;
    auto got = sync_call<Result<SyncOpened>>(
        *state_->engine, timeout,
        [side = state_->side, timeout](auto done) {
            side->server->accept(timeout, [done, timeout](pipeworks::Pipe&, AcceptResult& a) {
                switch (a.status) {
                    case RecvResult::Status::message: {
                        const PipePtr& p = a.pipe;
                        done(Result<SyncOpened>(SyncOpened{detail::SyncPipeSide::attach(p),
                                                           p->local_address(), p->peer_address()}));
                        return;
                    }
                    case RecvResult::Status::timeout:
                        done(Result<SyncOpened>(sync_timeout_error(what, timeout)));
                        return;
                    default:
                        done(Result<SyncOpened>(detail::end_error(a.end, what)));
                        return;
                }
            });
        },
        detail::close_late);
    if (!got) return sync_timeout_error(what, timeout);
    if (!*got) return got->error();
    return detail::SyncAccess::make_pipe(state_->engine, std::move(got->value()));
}

Error Server::close(milliseconds timeout) {
    constexpr const char* what = "sync::Server::close";
    if (Error e = refuse_on_loop_thread(what)) return e;
    if (!state_) return detail::empty_error(what);
    auto got =
        sync_call<Error>(*state_->engine, timeout, [side = state_->side, timeout](auto done) {
            // A server's end is its close: it has no error to report.
            detail::close_and_wait<Error>(
                side->server->loop(), timeout, what, done, side->end,
                [&] { side->server->close(); }, [](const EndInfo&) { return Error{}; });
        });
    if (!got) return sync_timeout_error(what, timeout);
    return std::move(*got);
}

bool running() noexcept {
    return detail::SyncEngine::running();
}

}  // namespace sync
}  // namespace pipeworks
