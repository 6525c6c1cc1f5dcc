// The lifecycle: the one path that ends a pipe, closing its handle, the end callbacks, and the
// deadlines that end a pipe (idle, frame, close).
#include "transport/pipe_impl.hpp"
#include "transport/socket_util.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <thread>

namespace pipeworks::detail {

PipeImpl::PipeImpl(Loop& loop, PipeKind kind, const NetConf& conf)
    : PipeImpl(loop, kind, [&] {
          auto c = std::make_shared<NetConf>(conf);
          c->loop = &loop;
          return c;
      }()) {}

PipeImpl::PipeImpl(Loop& loop, PipeKind kind, std::shared_ptr<NetConf> conf)
    : loop_(&loop), core_(&loop.core()), kind_(kind), conf_(std::move(conf)) {
    framed_ = conf_->framer.kind != FramerKind::raw;
    opened_ms_ = uv_now(core_->loop);
    implicit_sub_ = kind != PipeKind::tcp_server;
    std::memset(&h_, 0, sizeof h_);
    idle_deadline_.pipe = this;
    idle_deadline_.expired = &PipeImpl::idle_expired;
    frame_deadline_.pipe = this;
    frame_deadline_.expired = &PipeImpl::frame_expired;
    release_deadline_.pipe = this;
    release_deadline_.expired = &PipeImpl::release_expired;
}

PipeImpl::~PipeImpl() = default;

std::string PipeImpl::describe() const {
    std::string s = to_string(kind_);
    if (!local_.empty()) s += " " + local_.to_string();
    if (!peer_.empty()) s += (kind_ == PipeKind::udp ? " to " : " <-> ") + peer_.to_string();
    if (peer_.empty() && resolving_)
        s += " to " + resolving_->host + ":" + std::to_string(resolving_->port) + " (resolving)";
    return s;
}

Error PipeImpl::uv_fail(const char* op, int status, const Address& addr) const {
    std::string m = op;
    if (!addr.empty()) m += " " + addr.to_string();
    m += ": ";
    m += uv_strerror(status);
    m += " (";
    m += uv_err_name(status);
    m += ")";
    return Error(uv_error_code(status), std::move(m));
}

void PipeImpl::callback_threw(const char* what, std::exception_ptr e) {
    std::string why = "an exception that is not a std::exception";
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        why = x.what();
    } catch (...) {
    }
    if (ending()) {
        // No second end: the loop's run() reports it.
        core_->report_exception(e);
        return;
    }
    end(EndReason::error,
        Error(errc::callback_threw,
              std::string("the ") + what + " callback of " + describe() + " threw: " + why),
        Drain::graceful);
}

void PipeImpl::drop_callbacks() {
    message_cbs_.clear();
    up_cbs_.clear();
    end_cbs_.clear();
    drain_cbs_.clear();
    accept_cbs_.clear();
    eof_cbs_.clear();
    error_cbs_.clear();
    for (auto& s : subs_) s->handler = nullptr;
}

void PipeImpl::shutdown_silently() {
    // The Loop is going away: no user callback may run, so drop them all first.
    drop_callbacks();
    closed_fns_.clear();
    for (auto& s : subs_) s->waiters.clear();
    accept_waiters_.clear();
    if (!ending()) {
        life_ = Life::draining;
        end_info_ = EndInfo{EndReason::local_close, {}};
    }
    close_handle_now();
}

void PipeImpl::end(EndReason reason, Error error, Drain drain) {
    if (ending()) {
        // A graceful end waiting for its writes: they can no longer go out, so close now.
        if (drain == Drain::now && life_ == Life::draining) close_handle_now();
        return;
    }
    life_ = Life::draining;
    end_info_ = EndInfo{reason, std::move(error)};
    stop_reading();
    end_links();
    connect_timer_.cancel();
    up_timer_.cancel();
    core_->disarm(idle_deadline_);
    core_->disarm(frame_deadline_);
    core_->disarm(release_deadline_);
    if (tls_) core_->disarm(tls_->handshake);
    // A client still connecting keeps what was sent: it goes out once the connection is made.
    const bool connecting = kind_ == PipeKind::tcp_client && !connected_ && !peer_.empty();
    if (drain == Drain::graceful && tls_) tls_close_notify();  // queued_bytes() counts it
    if (drain == Drain::graceful && kind_ != PipeKind::tcp_server && kind_ != PipeKind::udp &&
        (connected_ || connecting) && !(conf_->linger && conf_->linger->count() == 0) &&
        queued_bytes() > 0) {
        // What the application already sent reaches the OS first, within close_timeout;
        // after_written() closes the handle once the queue is empty.
        flush();
        if (closing()) return;
        std::weak_ptr<PipeImpl> weak = self_;
        close_timer_ = loop_->call_later(conf_->close_timeout, [weak] {
            if (auto p = weak.lock()) p->close_timed_out();
        });
        return;
    }
    close_handle_now();
}

void PipeImpl::close_timed_out() {
    if (closing()) return;
    // The peer sees a reset, not a clean end that would claim everything arrived.
    edit_conf().linger = std::chrono::seconds(0);
    const std::string was = end_info_.error ? end_info_.error.message : to_string(end_info_.reason);
    end_info_.reason = EndReason::timeout;
    end_info_.error =
        Error(errc::close_timeout,
              describe() + ": " + std::to_string(queued_bytes()) +
                  " queued bytes did not reach the OS within " +
                  std::to_string(conf_->close_timeout.count()) +
                  " ms (NetConf.close_timeout); the connection was reset (ending: " + was + ")");
    close_handle_now();
}

namespace {

// A lingering close() blocks for up to SO_LINGER seconds. It runs on a thread of its own, after
// libuv has closed its descriptor, so this duplicate is the socket's last reference and the
// wait never falls on the loop thread.
void close_lingering(int fd) {
    try {
        std::thread([fd] { ::close(fd); }).detach();
    } catch (...) {
        ::close(fd);
    }
}

}  // namespace

void PipeImpl::close_handle_now() {
    if (closing()) return;
    life_ = Life::closing;
    end_info_.unsent_bytes = queued_bytes();
    end_links();
    core_->cancel_flush(this);
    core_->remove(this);
    core_->disarm(idle_deadline_);
    core_->disarm(frame_deadline_);
    core_->disarm(release_deadline_);
    if (tls_) core_->disarm(tls_->handshake);
    connect_timer_.cancel();
    close_timer_.cancel();
    up_timer_.cancel();
    close_accept_poll();  // before the listening socket closes
    close_attempts();
    cancel_resolve();
    // A server takes its accepted pipes down with it.
    while (first_client_) {
        PipeImpl* c = first_client_;
        first_client_ = c->client_next_;
        if (first_client_) first_client_->client_prev_ = nullptr;
        c->client_prev_ = c->client_next_ = nullptr;
        c->server_ = nullptr;
        if (core_->destroying)
            c->shutdown_silently();
        else  // what the server's pipes already sent still goes out
            c->end(EndReason::local_close, {}, Drain::graceful);
    }
    last_client_ = nullptr;
    open_clients_ = 0;
    if (accept_queue_) {
        for (auto& c : *accept_queue_) {
            if (core_->destroying)
                c->shutdown_silently();
            else
                c->end(EndReason::local_close, {}, Drain::now);
        }
        accept_queue_->clear();
    }
    int linger_fd = -1;
    if (conf_->linger && kind_ != PipeKind::udp && kind_ != PipeKind::tcp_server) {
        uv_os_fd_t fd;
        if (uv_fileno(&h_.handle, &fd) == 0) {
            linger l{};
            l.l_onoff = 1;
            l.l_linger = static_cast<int>(conf_->linger->count());  // validate() bounds it
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            if (l.l_linger > 0) linger_fd = ::dup(fd);
        }
    }
    close_handle(*core_, &h_.handle, [](uv_handle_t* h) {
        auto* p = impl_of(h);
        closed_handle(*p->core_);
        p->on_handle_closed();
    });
    if (linger_fd >= 0) close_lingering(linger_fd);
}

void PipeImpl::on_handle_closed() {
    auto keep = std::move(self_);
    if (PipeImpl* server = server_) {
        // Unlink from the server's list of clients.
        if (client_prev_)
            client_prev_->client_next_ = client_next_;
        else
            server->first_client_ = client_next_;
        if (client_next_)
            client_next_->client_prev_ = client_prev_;
        else
            server->last_client_ = client_prev_;
        server_ = nullptr;
        client_prev_ = client_next_ = nullptr;
        --server->open_clients_;
        if (!core_->destroying) server->client_closed();
    }
    if (!core_->destroying) run_end_callbacks();
    life_ = Life::ended;
    // Callbacks often capture pipes; releasing them here breaks reference cycles.
    drop_callbacks();
    std::string().swap(pending_);
    std::string().swap(inflight_);
    std::string().swap(raw_kept_);
    decoder_.reset();
    release_segs(segs_);
    release_segs(inflight_segs_);
    segs_bytes_ = 0;
}

void PipeImpl::opened() {
    touch();
    if (conf_->idle_timeout.count() > 0 && kind_ != PipeKind::tcp_server)
        core_->arm(idle_deadline_,
                   core_->fresh_now_ms() + static_cast<std::uint64_t>(conf_->idle_timeout.count()));
}

void PipeImpl::idle_expired(Deadline& d) {
    PipeImpl* p = static_cast<PipeDeadline&>(d).pipe;
    if (p->ending()) return;
    const auto timeout = static_cast<std::uint64_t>(p->conf_->idle_timeout.count());
    // last_activity_ms_ is the loop's cached clock, whole milliseconds that may lag the real
    // moment by up to one: the timeout has passed only once a fresh clock is past due.
    const std::uint64_t due = p->last_activity_ms_ + timeout;
    if (due >= p->core_->fresh_now_ms()) {
        p->core_->arm(d, due + 1);  // bytes moved meanwhile: the wait restarts from the last
        return;
    }
    p->end(EndReason::timeout,
           Error(errc::idle_timeout, p->describe() + ": no byte received or sent for " +
                                         std::to_string(timeout) + " ms (NetConf.idle_timeout)"),
           Drain::graceful);
}

void PipeImpl::frame_expired(Deadline& d) {
    PipeImpl* p = static_cast<PipeDeadline&>(d).pipe;
    if (p->ending()) return;
    const auto timeout = static_cast<std::uint64_t>(p->conf_->frame_timeout.count());
    if (!p->reading_) {
        // Not reading (paused, backpressure): the peer cannot complete the frame; wait again.
        p->core_->arm(d, uv_now(p->core_->loop) + timeout);
        return;
    }
    const std::size_t held = p->decoder_ ? p->decoder_->buffered() : 0;
    p->end(
        EndReason::timeout,
        Error(errc::frame_timeout, p->describe() + ": a frame started " + std::to_string(timeout) +
                                       " ms ago is still incomplete (" + std::to_string(held) +
                                       " bytes received; NetConf.frame_timeout)"),
        Drain::graceful);
    p->end_info_.partial_frame_bytes = held;
}

}  // namespace pipeworks::detail
