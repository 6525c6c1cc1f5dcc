// Servers: listening, accepting within the connection limit, and handing accepted pipes over.
#include "transport/pipe_impl.hpp"
#include "transport/socket_util.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>

namespace pipeworks::detail {

// pipeworks accepts by itself (a poll handle on the listening socket) rather than through
// uv_listen: libuv 1.44 meets EMFILE by accepting and closing the waiting connections, silently,
// and holds one accepted connection when a server stops taking them. Here a server at its
// limit, paused or out of descriptors just stops watching, and the connections wait in the
// backlog.
Error PipeImpl::start_listen() {
    uv_os_fd_t fd;
    if (int rc = uv_fileno(&h_.handle, &fd); rc != 0) return uv_fail("listen on", rc, local_);
    if (::listen(fd, conf_->backlog) != 0) return uv_fail("listen on", os_error(), local_);
    local_ = sockname(&h_.handle, false);
    accept_poll_ = new uv_poll_t;
    if (int rc = uv_poll_init_socket(core_->loop, accept_poll_, fd); rc != 0) {
        delete accept_poll_;
        accept_poll_ = nullptr;
        return uv_fail("listen on", rc, local_);
    }
    accept_poll_->data = this;
    connected_ = true;
    watch_accepts();
    return {};
}

void PipeImpl::watch_accepts() {
    if (!accept_poll_ || closing()) return;
    const bool want = !paused_ && !ending() && !accept_retry_.active() &&
                      !(conf_->max_clients != 0 && open_clients_ >= conf_->max_clients);
    if (want == accepting_) return;
    accepting_ = want;
    if (!want) {
        uv_poll_stop(accept_poll_);
        return;
    }
    uv_poll_start(accept_poll_, UV_READABLE, [](uv_poll_t* h, int status, int) {
        static_cast<PipeImpl*>(h->data)->accept_ready(status);
    });
}

void PipeImpl::close_accept_poll() noexcept {
    if (!accept_poll_) return;
    accept_retry_.cancel();
    accept_poll_->data = core_;
    close_handle(*core_, reinterpret_cast<uv_handle_t*>(accept_poll_), [](uv_handle_t* h) {
        closed_handle(*static_cast<LoopCore*>(h->data));
        delete reinterpret_cast<uv_poll_t*>(h);
    });
    accept_poll_ = nullptr;
}

namespace {
void report_accept_failure(PipeImpl& server, int status) {
    ++server.dropped_;
    // Once per burst: a server out of descriptors fails every accept until one is freed.
    if (server.accept_error_reported_) return;
    server.accept_error_reported_ = true;
    Error e(errc::accept_failed, "accept on " + server.describe() + ": " + uv_strerror(status) +
                                     " (" + uv_err_name(status) + "); the server keeps serving");
    server.guarded("error", [&] {
        server.error_cbs_.call([&] { return server.ending(); }, static_cast<Pipe&>(server), e);
    });
}
}  // namespace

void PipeImpl::accept_ready(int status) {
    if (ending()) return;
    if (status < 0) {
        report_accept_failure(*this, status);
        return;
    }
    uv_os_fd_t lfd;
    if (uv_fileno(&h_.handle, &lfd) != 0) return;
    // A burst at a time, so the loop's other pipes get their turn.
    for (int i = 0; i < 64 && accepting_; ++i) {
        int fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            const int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK) return;
            if (err == EINTR || err == ECONNABORTED) continue;
            report_accept_failure(*this, -err);
            // Out of descriptors or memory: the connections wait in the backlog; look again
            // shortly, or as soon as one of this server's pipes ends (client_closed()).
            std::weak_ptr<PipeImpl> weak = self_;
            accept_retry_ = loop_->call_later(std::chrono::milliseconds(100), [weak] {
                if (auto p = weak.lock()) p->watch_accepts();
            });
            watch_accepts();
            return;
        }
        accepted(fd);
        if (ending()) return;
        watch_accepts();  // the limit may just have been reached
    }
}

void PipeImpl::accepted(int fd) {
    auto client = std::make_shared<PipeImpl>(*loop_, PipeKind::tcp_accepted, conf_);
    uv_tcp_init(core_->loop, &client->h_.tcp);
    client->h_.handle.data = client.get();
    client->handle_inited_ = true;
    client->self_ = client;
    core_->add(client.get());
    if (int rc = uv_tcp_open(&client->h_.tcp, fd); rc != 0) {
        ::close(fd);
        client->shutdown_silently();
        report_accept_failure(*this, rc);
        return;
    }
    accept_error_reported_ = false;
    client->set_stream_options(&client->h_.tcp);
    if (!conf_->do_close) {
        uv_os_fd_t fd;
        if (uv_fileno(&client->h_.handle, &fd) == 0) client->kept_fd_ = ::dup(fd);
    }
    client->local_ = sockname(&client->h_.handle, false);
    client->peer_ = sockname(&client->h_.handle, true);
    client->connected_ = true;
    // Link into this server's list of open clients (accept order).
    client->server_ = this;
    client->client_prev_ = last_client_;
    if (last_client_)
        last_client_->client_next_ = client.get();
    else
        first_client_ = client.get();
    last_client_ = client.get();
    ++open_clients_;
    if (tls_) {
        // Handed over once the handshake is done (tls_established -> deliver_accepted).
        client->use_tls_context(tls_->context, {});
        if (Error e = client->start_tls()) {
            report_handshake_failure(e);
            client->fail(EndReason::error, std::move(e));
            return;
        }
        client->opened();
        client->start_reading();
        return;
    }
    client->opened();
    client->start_reading();
    deliver_accepted(client);
}

void PipeImpl::deliver_accepted(const std::shared_ptr<PipeImpl>& client) {
    client->message_cbs_ = message_cbs_.copy();
    client->up_cbs_ = up_cbs_.copy();
    client->end_cbs_ = end_cbs_.copy();
    client->drain_cbs_ = drain_cbs_.copy();
    client->eof_cbs_ = eof_cbs_.copy();
    client->next_id_ = next_id_;
    handle_accepted(client);
}

void PipeImpl::report_handshake_failure(const Error& e) {
    ++dropped_;
    guarded("error",
            [&] { error_cbs_.call([this] { return ending(); }, static_cast<Pipe&>(*this), e); });
}

void PipeImpl::handle_accepted(const std::shared_ptr<PipeImpl>& client) {
    PipePtr as_pipe = client;
    guarded("accept", [&] {
        accept_cbs_.call([this] { return ending(); }, static_cast<Pipe&>(*this), as_pipe);
    });
    if (!hand_to_accept_waiter(as_pipe) && accept_cbs_.empty() && message_cbs_.empty()) {
        // Only a server driven by accept() queues: one driven by callbacks would otherwise
        // fill the queue with pipes nobody takes.
        if (!accept_queue_)
            accept_queue_ = std::make_unique<std::deque<std::shared_ptr<PipeImpl>>>();
        if (accept_queue_->size() >= conf_->max_accept_queue) {
            ++dropped_;
            client->fail(EndReason::error,
                         Error(errc::queue_full, "accept queue of " + describe() +
                                                     " is full (NetConf.max_accept_queue)"));
            return;
        }
        accept_queue_->push_back(client);
    }
    if (!client->ending())
        client->guarded("up", [&] {
            client->up_cbs_.call([&] { return client->ending(); }, static_cast<Pipe&>(*client));
        });
}

void PipeImpl::client_closed() {
    // A descriptor and a slot are free: a server held back by either looks again.
    accept_retry_.cancel();
    watch_accepts();
}

bool PipeImpl::hand_to_accept_waiter(const PipePtr& client) {
    if (accept_waiters_.empty()) return false;
    AcceptWaiter w = std::move(accept_waiters_.front());
    accept_waiters_.erase(accept_waiters_.begin());
    w.timer.cancel();
    AcceptResult r;
    r.status = RecvResult::Status::message;
    r.pipe = client;
    guarded("accept", [&] { w.fn(*this, r); });
    return true;
}

void PipeImpl::give_back_accepted(const PipePtr& client) {
    auto c = std::static_pointer_cast<PipeImpl>(client);
    if (ending() || c->ending() || c->ended()) return;
    if (hand_to_accept_waiter(client)) return;
    if (!accept_queue_) accept_queue_ = std::make_unique<std::deque<std::shared_ptr<PipeImpl>>>();
    accept_queue_->push_front(std::move(c));
}

std::optional<PipePtr> PipeImpl::try_accept() {
    if (!accept_queue_ || accept_queue_->empty()) return std::nullopt;
    auto c = std::move(accept_queue_->front());
    accept_queue_->pop_front();
    return PipePtr(c);
}

void PipeImpl::wait_for_accept(std::optional<std::chrono::milliseconds> timeout,
                               AcceptResultFn fn) {
    auto id = next_waiter_++;
    std::weak_ptr<PipeImpl> weak = self_;
    Timer t = loop_->call_later(timeout.value_or(conf_->recv_timeout), [weak, id] {
        auto p = weak.lock();
        if (!p) return;
        auto& ws = p->accept_waiters_;
        auto it = std::find_if(ws.begin(), ws.end(), [&](auto& w) { return w.id == id; });
        if (it == ws.end()) return;
        auto w = std::move(*it);
        ws.erase(it);
        AcceptResult r;
        r.status = RecvResult::Status::timeout;
        p->guarded("accept", [&] { w.fn(*p, r); });
    });
    accept_waiters_.push_back(AcceptWaiter{id, std::move(fn), t});
}

}  // namespace pipeworks::detail
