// Servers: listening, accepting within the connection limit, and handing accepted pipes over.
#include "transport/pipe_impl.hpp"
#include "transport/socket_util.hpp"

#include <unistd.h>

#include <algorithm>

namespace pipeworks::detail {

Error PipeImpl::start_listen() {
    int rc = uv_listen(&h_.stream, conf_->backlog, [](uv_stream_t* s, int status) {
        impl_of(reinterpret_cast<uv_handle_t*>(s))->on_connection(status);
    });
    if (rc != 0) return uv_fail("listen on", rc, local_);
    local_ = sockname(&h_.handle, false);
    connected_ = true;
    return {};
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

void PipeImpl::on_connection(int status) {
    if (ending()) return;
    const bool at_limit = conf_->max_clients != 0 && open_clients_ >= conf_->max_clients;
    if (paused_ || (status == 0 && at_limit)) {
        // Not accepting leaves the connection in the backlog; libuv stops watching the socket
        // until uv_accept is called (by resume(), or when a client ends: client_closed()).
        accept_pending_ = status == 0;
        return;
    }
    if (status != 0) {
        // EMFILE and friends: the server stays up; the connection waits in the backlog.
        report_accept_failure(*this, status);
        return;
    }
    auto client = std::make_shared<PipeImpl>(*loop_, PipeKind::tcp_accepted, conf_);
    uv_tcp_init(core_->loop, &client->h_.tcp);
    client->h_.handle.data = client.get();
    client->handle_inited_ = true;
    client->self_ = client;
    core_->add(client.get());
    int rc = uv_accept(&h_.stream, &client->h_.stream);
    if (rc != 0) {
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
    client->message_cbs_ = message_cbs_.copy();
    client->up_cbs_ = up_cbs_.copy();
    client->end_cbs_ = end_cbs_.copy();
    client->drain_cbs_ = drain_cbs_.copy();
    client->eof_cbs_ = eof_cbs_.copy();
    client->next_id_ = next_id_;
    // Link into this server's list of open clients (accept order).
    client->server_ = this;
    client->client_prev_ = last_client_;
    if (last_client_)
        last_client_->client_next_ = client.get();
    else
        first_client_ = client.get();
    last_client_ = client.get();
    ++open_clients_;
    client->opened();
    client->start_reading();
    handle_accepted(client);
}

void PipeImpl::handle_accepted(const std::shared_ptr<PipeImpl>& client) {
    PipePtr as_pipe = client;
    guarded("accept", [&] {
        accept_cbs_.call([this] { return ending(); }, static_cast<Pipe&>(*this), as_pipe);
    });
    if (!accept_waiters_.empty()) {
        AcceptWaiter w = std::move(accept_waiters_.front());
        accept_waiters_.erase(accept_waiters_.begin());
        w.timer.cancel();
        AcceptResult r;
        r.status = RecvResult::Status::message;
        r.pipe = as_pipe;
        guarded("accept", [&] { w.fn(*this, r); });
    } else if (accept_cbs_.empty() && message_cbs_.empty()) {
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
    if (!accept_pending_ || paused_ || ending()) return;
    if (conf_->max_clients != 0 && open_clients_ >= conf_->max_clients) return;
    accept_pending_ = false;
    on_connection(0);
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
