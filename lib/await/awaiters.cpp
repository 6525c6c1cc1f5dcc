// The awaiters of await.hpp: how each starts its callback-API operation, and how a wait that
// ends early lets go of it.
#include <pipeworks/await.hpp>

#include "transport/pipe_impl.hpp"

#include <string>

namespace pipeworks::detail {

Error end_error(const Pipe& pipe, std::string_view what) {
    auto end = pipe.end_info();
    if (!end) return {};
    if (end->error) return end->error;
    if (end->reason == EndReason::local_close || end->reason == EndReason::peer_close) return {};
    return Error(errc::pipe_ended,
                 std::string(what) + ": the pipe ended (" + to_string(end->reason) + ")");
}

// ---- connect

bool ConnectAwaiter::start(Wake w) {
    auto opened = open_();
    if (!opened) {
        result_.emplace(opened.error());
        return false;
    }
    pipe_ = *opened;
    up_ = pipe_->on_up([w](Pipe&) {
        w.operator()<ConnectAwaiter>([](ConnectAwaiter& a) {
            a.unwatch();
            a.result_.emplace(std::move(a.pipe_));
        });
    });
    end_ = pipe_->on_end([w](Pipe& p, const EndInfo& end) {
        w.operator()<ConnectAwaiter>([&](ConnectAwaiter& a) {
            a.unwatch();
            a.pipe_.reset();
            Error e = end.error ? end.error
                                : Error(errc::pipe_ended, a.what_ + ": the pipe ended (" +
                                                              to_string(end.reason) + ")");
            a.result_.emplace(std::move(e));
        });
        (void)p;
    });
    return true;
}

void ConnectAwaiter::unwatch() noexcept {
    if (!pipe_) return;
    pipe_->remove(up_);
    pipe_->remove(end_);
}

void ConnectAwaiter::detach() noexcept {
    unwatch();
    // Never handed over: nobody else would close it.
    if (pipe_) pipe_->close();
    pipe_.reset();
}

// ---- accept, recv, send_recv

bool AcceptAwaiter::start(Wake w) {
    server_->accept(timeout_, [w](Pipe& server, AcceptResult& r) {
        bool taken =
            w.operator()<AcceptAwaiter>([&](AcceptAwaiter& a) { a.result_.emplace(std::move(r)); });
        // A wait that ended early (a cancelled task): the client goes to whoever accepts next.
        if (!taken && r.pipe) PipeImpl::of(server).give_back_accepted(r.pipe);
    });
    return true;
}

bool RecvAwaiter::start(Wake w) {
    pipe_->recv(sub_, timeout_, [w, sub = sub_](Pipe& p, RecvResult& r) {
        bool taken =
            w.operator()<RecvAwaiter>([&](RecvAwaiter& a) { a.result_.emplace(std::move(r)); });
        // A wait that ended early (a cancelled task): the message goes to whoever reads next.
        if (!taken) PipeImpl::of(p).give_back_message(sub, r);
    });
    return true;
}

bool SendRecvAwaiter::start(Wake w) {
    Error e = pipe_->send_recv(
        bytes_, sub_, timeout_,
        [w, sub = sub_](Pipe& p, RecvResult& r) {
            bool taken = w.operator()<SendRecvAwaiter>(
                [&](SendRecvAwaiter& a) { a.result_.emplace(std::move(r)); });
            if (!taken) PipeImpl::of(p).give_back_message(sub, r);
        },
        to_);
    if (!e) return true;
    RecvResult r;
    r.status = RecvResult::Status::ended;
    r.end = EndInfo{EndReason::local_close, std::move(e)};
    result_.emplace(std::move(r));
    return false;
}

// ---- send

bool SendAwaiter::start(Wake w) {
    Error e = to_.empty() ? pipe_->send(bytes_) : pipe_->send_to(bytes_, to_);
    if (e || pipe_->writable()) {
        result_.emplace(std::move(e));
        return false;
    }
    drain_ = pipe_->on_drain([w](Pipe&) {
        w.operator()<SendAwaiter>([](SendAwaiter& a) {
            a.unwatch();
            a.result_.emplace();
        });
    });
    end_ = pipe_->on_end([w](Pipe& p, const EndInfo& end) {
        w.operator()<SendAwaiter>([&](SendAwaiter& a) {
            a.unwatch();
            a.result_.emplace(errc::pipe_ended, "send on " + p.peer_address().to_string() +
                                                    ": the pipe ended (" + to_string(end.reason) +
                                                    (end.error ? ": " + end.error.message : "") +
                                                    "), " + std::to_string(end.unsent_bytes) +
                                                    " bytes unsent");
        });
    });
    return true;
}

void SendAwaiter::unwatch() noexcept {
    pipe_->remove(drain_);
    pipe_->remove(end_);
}

void SendAwaiter::detach() noexcept {
    unwatch();  // the bytes stay queued: they still go out
}

// ---- shutdown, close

bool EndAwaiter::start(Wake w) {
    if (shutdown_) {
        if (Error e = pipe_->shutdown()) {
            result_.emplace(std::move(e));
            return false;
        }
        if (pipe_->ended()) {
            result_.emplace(end_error(*pipe_, "shutdown"));
            return false;
        }
        end_ = pipe_->on_end([w](Pipe& p, const EndInfo&) {
            w.operator()<EndAwaiter>(
                [&](EndAwaiter& a) { a.result_.emplace(end_error(p, "shutdown")); });
        });
        return true;
    }
    if (pipe_->ended()) {
        result_.emplace(end_error(*pipe_, "close"));
        return false;
    }
    pipe_->close([w](Pipe& p) {
        w.operator()<EndAwaiter>([&](EndAwaiter& a) { a.result_.emplace(end_error(p, "close")); });
    });
    return true;
}

void EndAwaiter::detach() noexcept {
    if (end_ != 0) pipe_->remove(end_);  // the shutdown itself stays under way
}

// ---- sleep

bool SleepAwaiter::start(Wake w) {
    timer_ = loop_->call_later(
        delay_, [w] { w.operator()<SleepAwaiter>([](SleepAwaiter& a) { a.result_.emplace(); }); });
    return true;
}

// ---- request

bool RequestAwaiter::start(Wake w) {
    id_ = conn_->submit(
        type_, flags_, payload_, channel_,
        [w](PacketResult& r) {
            w.operator()<RequestAwaiter>(
                [&](RequestAwaiter& a) { a.result_.emplace(std::move(r)); });
        },
        timeout_);
    return true;
}

void RequestAwaiter::detach() noexcept {
    // Its callback runs now and finds the wait over; the late response is dropped.
    if (id_.valid) conn_->cancel(id_);
}

}  // namespace pipeworks::detail
