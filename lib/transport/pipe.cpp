#include "transport/pipe_impl.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace pipeworks {

const char* to_string(PipeKind k) noexcept {
    switch (k) {
        case PipeKind::tcp_client:
            return "tcp client";
        case PipeKind::tcp_server:
            return "tcp server";
        case PipeKind::tcp_accepted:
            return "tcp accepted";
        case PipeKind::udp:
            return "udp";
    }
    return "?";
}

const char* to_string(EndReason r) noexcept {
    switch (r) {
        case EndReason::local_close:
            return "local close";
        case EndReason::peer_close:
            return "peer close";
        case EndReason::peer_reset:
            return "peer reset";
        case EndReason::error:
            return "error";
        case EndReason::timeout:
            return "timeout";
        case EndReason::framing_error:
            return "framing error";
    }
    return "?";
}

bool Pattern::matches(std::string_view message) const noexcept {
    if (bytes.empty()) return true;
    if (anchored) return message.substr(0, bytes.size()) == bytes;
    return message.find(bytes) != std::string_view::npos;
}

namespace detail {

// ---------------------------------------------------------------- RateWindow

void RateWindow::roll(std::uint64_t now_ms, std::uint64_t n) noexcept {
    auto sec = static_cast<std::uint32_t>(now_ms / 1000);
    auto i = sec % kBuckets;
    if (sec_[i] != sec) {
        sec_[i] = sec;
        bytes_[i] = 0;
    }
    bytes_[i] += n;
    cur_ = i;
    cur_end_ms_ = (static_cast<std::uint64_t>(sec) + 1) * 1000;
}

double RateWindow::rate(std::uint64_t now_ms, std::uint64_t since_ms) const noexcept {
    auto now_sec = static_cast<std::uint32_t>(now_ms / 1000);
    std::uint64_t total = 0;
    for (unsigned i = 0; i < kBuckets; ++i)
        if (now_sec - sec_[i] < kBuckets) total += bytes_[i];
    // The window spans the last kBuckets seconds, or the pipe's life if shorter.
    double span_ms = static_cast<double>(
        std::min<std::uint64_t>(kBuckets * 1000ull, std::max<std::uint64_t>(now_ms - since_ms, 1)));
    if (now_ms - since_ms >= kBuckets * 1000ull)
        span_ms = static_cast<double>((kBuckets - 1) * 1000ull + now_ms % 1000 + 1);
    return static_cast<double>(total) * 1000.0 / span_ms;
}

// ---------------------------------------------------------------- helpers

namespace {

PipeImpl* impl_of(uv_handle_t* h) {
    return static_cast<PipeImpl*>(h->data);
}

EndReason reason_for(int status) {
    switch (status) {
        case UV_EOF:
            return EndReason::peer_close;
        case UV_ECONNRESET:
        case UV_EPIPE:
            return EndReason::peer_reset;
        case UV_ETIMEDOUT:
            return EndReason::timeout;
        default:
            return EndReason::error;
    }
}

Address sockname(const uv_handle_t* h, bool peer) {
    sockaddr_storage ss{};
    int len = sizeof ss;
    int rc;
    if (h->type == UV_TCP) {
        auto* t = reinterpret_cast<const uv_tcp_t*>(h);
        rc = peer ? uv_tcp_getpeername(t, reinterpret_cast<sockaddr*>(&ss), &len)
                  : uv_tcp_getsockname(t, reinterpret_cast<sockaddr*>(&ss), &len);
    } else {
        auto* u = reinterpret_cast<const uv_udp_t*>(h);
        rc = peer ? uv_udp_getpeername(u, reinterpret_cast<sockaddr*>(&ss), &len)
                  : uv_udp_getsockname(u, reinterpret_cast<sockaddr*>(&ss), &len);
    }
    return rc == 0 ? Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss)) : Address{};
}

int os_error() {
    return -errno;
}

// A datagram that had to wait for the socket; owns a copy of its bytes.
struct UdpSendReq {
    uv_udp_send_t req;
    std::weak_ptr<PipeImpl> pipe;
    Address to;
    std::string data;
};

void udp_send_done(uv_udp_send_t* req, int status) {
    auto* r = static_cast<UdpSendReq*>(req->data);
    auto p = r->pipe.lock();
    if (p) {
        p->udp_queued_ -= r->data.size();
        if (status != 0 && status != UV_ECANCELED) ++p->dropped_;
        if (!p->handle_closing_) p->after_written();
    }
    delete r;
}

int submit_udp(UdpSendReq* r, uv_udp_t* u) {
    r->req.data = r;
    uv_buf_t b = uv_buf_init(r->data.data(), static_cast<unsigned>(r->data.size()));
    // An empty `to`: the socket is connected and sends to its peer (libuv refuses an address).
    return uv_udp_send(&r->req, u, &b, 1, r->to.empty() ? nullptr : r->to.sockaddr(),
                       udp_send_done);
}

// Closes fd on libuv's thread pool (a lingering close may block).
void close_on_thread_pool(LoopCore& core, int fd);

// Largest payload of one datagram.
std::size_t max_datagram(const Address& to) {
    return to.is_v6() ? 65527 : 65507;
}

}  // namespace

// ---------------------------------------------------------------- lifetime

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
}

PipeImpl::~PipeImpl() = default;

std::string PipeImpl::describe() const {
    std::string s = to_string(kind_);
    if (!local_.empty()) s += " " + local_.to_string();
    if (!peer_.empty()) s += (kind_ == PipeKind::udp ? " to " : " <-> ") + peer_.to_string();
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

void PipeImpl::shutdown_silently() {
    // The Loop is going away: no user callback may run, so drop them all first.
    message_cbs_.clear();
    up_cbs_.clear();
    end_cbs_.clear();
    drain_cbs_.clear();
    accept_cbs_.clear();
    closed_fns_.clear();
    for (auto& s : subs_) {
        s->waiters.clear();
        s->handler = nullptr;
    }
    accept_waiters_.clear();
    if (!ending_) {
        ending_ = true;
        end_info_ = EndInfo{EndReason::local_close, {}};
    }
    close_handle_now();
}

void PipeImpl::fail(EndReason reason, Error error) {
    if (ending_) {
        // A graceful close waiting for its writes: they can no longer go out, so close now.
        if (close_after_flush_ && !handle_closing_) close_handle_now();
        return;
    }
    ending_ = true;
    end_info_ = EndInfo{reason, std::move(error)};
    begin_close(false);
}

void PipeImpl::begin_close(bool graceful) {
    stop_reading();
    end_links();
    connect_timer_.cancel();
    up_timer_.cancel();
    // A client still connecting keeps what was sent: it goes out once the connection is made.
    bool connecting = kind_ == PipeKind::tcp_client && !connected_ && !peer_.empty();
    if (graceful && kind_ != PipeKind::tcp_server && kind_ != PipeKind::udp &&
        (connected_ || connecting) && !(conf_->linger && conf_->linger->count() == 0) &&
        queued_bytes() > 0) {
        // Let what the application already sent reach the OS first, within con_timeout.
        close_after_flush_ = true;
        flush();
        if (handle_closing_) return;
        std::weak_ptr<PipeImpl> weak = self_;
        close_timer_ = loop_->call_later(conf_->con_timeout, [weak] {
            if (auto p = weak.lock()) p->close_handle_now();
        });
        return;
    }
    close_handle_now();
}

void PipeImpl::close_handle_now() {
    if (handle_closing_) return;
    handle_closing_ = true;
    end_links();
    core_->cancel_flush(this);
    core_->remove(this);
    connect_timer_.cancel();
    close_timer_.cancel();
    up_timer_.cancel();
    kick_timer_.cancel();
    // A server takes its accepted pipes down with it.
    while (first_client_) {
        PipeImpl* c = first_client_;
        first_client_ = c->client_next_;
        if (first_client_) first_client_->client_prev_ = nullptr;
        c->client_prev_ = c->client_next_ = nullptr;
        c->server_ = nullptr;
        if (core_->destroying)
            c->shutdown_silently();
        else if (!c->ending_) {
            c->ending_ = true;
            c->end_info_ = EndInfo{EndReason::local_close, {}};
            c->begin_close(true);  // what the server's pipes already sent still goes out
        }
    }
    last_client_ = nullptr;
    if (accept_queue_) {
        for (auto& c : *accept_queue_) {
            if (core_->destroying)
                c->shutdown_silently();
            else if (!c->ending_)
                c->fail(EndReason::local_close, {});
        }
        accept_queue_->clear();
    }
    if (conf_->linger && kind_ != PipeKind::udp && kind_ != PipeKind::tcp_server) {
        uv_os_fd_t fd;
        if (uv_fileno(&h_.handle, &fd) == 0) {
            linger l{};
            l.l_onoff = 1;
            l.l_linger = static_cast<int>(conf_->linger->count());
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            // A lingering close() blocks for up to l_linger seconds. libuv's close must not
            // block the loop, so a duplicate takes the last reference and is closed on the
            // thread pool, where the wait is harmless.
            if (l.l_linger > 0) close_on_thread_pool(*core_, ::dup(fd));
        }
    }
    close_handle(*core_, &h_.handle, [](uv_handle_t* h) {
        auto* p = impl_of(h);
        closed_handle(*p->core_);
        p->on_handle_closed();
    });
}

void PipeImpl::on_handle_closed() {
    auto keep = std::move(self_);
    if (server_) {
        // Unlink from the server's list of clients.
        if (client_prev_)
            client_prev_->client_next_ = client_next_;
        else
            server_->first_client_ = client_next_;
        if (client_next_)
            client_next_->client_prev_ = client_prev_;
        else
            server_->last_client_ = client_prev_;
        server_ = nullptr;
        client_prev_ = client_next_ = nullptr;
    }
    if (!core_->destroying) {
        // Waiters first (they belong to calls the application made), then end callbacks.
        for (auto& s : subs_) {
            auto waiters = std::move(s->waiters);
            s->waiters.clear();
            for (auto& w : waiters) {
                w.timer.cancel();
                RecvResult r;
                r.status = RecvResult::Status::ended;
                r.end = end_info_;
                w.fn(*this, r);
            }
        }
        auto accept_waiters = std::move(accept_waiters_);
        accept_waiters_.clear();
        for (auto& w : accept_waiters) {
            w.timer.cancel();
            AcceptResult r;
            r.status = RecvResult::Status::ended;
            r.end = end_info_;
            w.fn(*this, r);
        }
        ended_ = true;
        end_cbs_.call([] { return false; }, static_cast<Pipe&>(*this), end_info_);
        auto fns = std::move(closed_fns_);
        closed_fns_.clear();
        for (auto& fn : fns) fn(*this);
    }
    ended_ = true;
    // Callbacks often capture pipes; releasing them here breaks reference cycles.
    message_cbs_.clear();
    up_cbs_.clear();
    end_cbs_.clear();
    drain_cbs_.clear();
    accept_cbs_.clear();
    for (auto& s : subs_) s->handler = nullptr;
    pending_.clear();
    pending_.shrink_to_fit();
    inflight_.clear();
    inflight_.shrink_to_fit();
    release_segs(segs_);
    release_segs(inflight_segs_);
    segs_bytes_ = 0;
}

// ---------------------------------------------------------------- socket setup

namespace {

Error set_opt(int fd, int level, int name, int value, const char* what) {
    if (setsockopt(fd, level, name, &value, sizeof value) != 0)
        return Error(uv_error_code(-errno),
                     std::string("setsockopt ") + what + ": " + uv_strerror(-errno));
    return {};
}

void close_on_thread_pool(LoopCore& core, int fd) {
    if (fd < 0) return;
    struct Work {
        uv_work_t req;
        int fd;
    };
    auto* w = new Work{{}, fd};
    w->req.data = w;
    int rc = uv_queue_work(
        core.loop, &w->req, [](uv_work_t* r) { ::close(static_cast<Work*>(r->data)->fd); },
        [](uv_work_t* r, int) { delete static_cast<Work*>(r->data); });
    if (rc != 0) {
        ::close(fd);
        delete w;
    }
}

// uv_udp_open sets SO_REUSEADDR on every socket it is given; this puts the socket's own value
// back, so NetConf::reuse_addr (or an adopted socket's owner) decides whether a port is shared.
int udp_open_keeping_reuse(uv_udp_t* u, int fd) {
    int reuse = 0;
    socklen_t len = sizeof reuse;
    bool known = getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, &len) == 0;
    int rc = uv_udp_open(u, fd);
    if (rc == 0 && known) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof reuse);
    return rc;
}

}  // namespace

Error PipeImpl::bound_socket(int type, Family family, const Address& local, int& fd) {
    fd = ::socket(family == Family::ipv6 ? AF_INET6 : AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  conf_->sock_proto);
    if (fd < 0) return uv_fail("socket", os_error());
    auto fail_fd = [&](Error e) {
        ::close(fd);
        fd = -1;
        return e;
    };
    // libuv would set SO_REUSEADDR on every bind; pipeworks makes it NetConf::reuse_addr.
    if (conf_->reuse_addr)
        if (auto e = set_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR")) return fail_fd(e);
    if (type == SOCK_DGRAM && conf_->broadcast)
        if (auto e = set_opt(fd, SOL_SOCKET, SO_BROADCAST, 1, "SO_BROADCAST")) return fail_fd(e);
    if (!local.empty() && ::bind(fd, local.sockaddr(), local.sockaddr_len()) != 0)
        return fail_fd(uv_fail("bind", os_error(), local));
    return {};
}

Error PipeImpl::open_tcp_socket(const Address& local, Family family, bool listening) {
    int fd = -1;
    if (Error e = bound_socket(SOCK_STREAM, family, local, fd)) return e;
    auto fail_fd = [&](Error e) {
        ::close(fd);
        return e;
    };
    int rc = uv_tcp_open(&h_.tcp, fd);
    if (rc != 0) return fail_fd(uv_fail("uv_tcp_open", rc));
    if (!listening) {
        if (conf_->nodelay) uv_tcp_nodelay(&h_.tcp, 1);
        if (conf_->keepalive)
            uv_tcp_keepalive(&h_.tcp, 1, static_cast<unsigned>(conf_->keepalive->count()));
    }
    if (!conf_->do_close) kept_fd_ = ::dup(fd);
    return {};
}

Error PipeImpl::start_connect(const Address& to) {
    peer_ = to;
    connect_req_ = std::make_unique<uv_connect_t>();
    connect_req_->data = this;
    int rc = uv_tcp_connect(connect_req_.get(), &h_.tcp, to.sockaddr(),
                            [](uv_connect_t* req, int status) {
                                static_cast<PipeImpl*>(req->data)->on_connected(status);
                            });
    if (rc != 0) return uv_fail("connect to", rc, to);
    local_ = sockname(&h_.handle, false);
    std::weak_ptr<PipeImpl> weak = self_;
    connect_timer_ = loop_->call_later(conf_->con_timeout, [weak] {
        auto p = weak.lock();
        if (!p || p->connected_) return;
        p->fail(
            EndReason::timeout,
            Error(errc::connect_timeout,
                  "connect to " + p->peer_.to_string() + ": no answer within " +
                      std::to_string(p->conf_->con_timeout.count()) + " ms (NetConf.con_timeout)"));
    });
    return {};
}

void PipeImpl::on_connected(int status) {
    if (status == UV_ECANCELED) return;
    if (ending_) {
        // close() while connecting, with bytes queued: deliver them, then close.
        if (!close_after_flush_ || handle_closing_) return;
        if (status != 0) {
            close_handle_now();
            return;
        }
        connected_ = true;
        local_ = sockname(&h_.handle, false);
        flush();
        return;
    }
    connect_timer_.cancel();
    if (status != 0) {
        fail(reason_for(status) == EndReason::timeout ? EndReason::timeout : EndReason::error,
             uv_fail("connect to", status, peer_));
        return;
    }
    connected_ = true;
    local_ = sockname(&h_.handle, false);
    up_cbs_.call([this] { return ending_; }, static_cast<Pipe&>(*this));
    if (ending_) return;
    start_reading();
    if (!pending_.empty() || !segs_.empty()) core_->schedule_flush(this);
    if (shut_requested_) try_shutdown();
}

void PipeImpl::start_resolve(std::string host, std::uint16_t port) {
    struct Req {
        uv_getaddrinfo_t req;
        std::weak_ptr<PipeImpl> pipe;
        std::uint16_t port;
        std::string host;
    };
    auto* r = new Req{};
    r->pipe = self_;
    r->port = port;
    r->host = std::move(host);
    r->req.data = r;
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    int rc = uv_getaddrinfo(
        core_->loop, &r->req,
        [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
            std::unique_ptr<Req> r(static_cast<Req*>(req->data));
            auto p = r->pipe.lock();
            if (p && !p->ending_) {
                p->connect_timer_.cancel();
                if (status != 0 || res == nullptr) {
                    p->fail(EndReason::error,
                            Error(uv_error_code(status ? status : UV_EAI_NONAME),
                                  "resolve \"" + r->host + "\": " + uv_strerror(status)));
                } else {
                    Address to = Address::from_sockaddr(res->ai_addr).with_port(r->port);
                    Error e = p->open_tcp_socket(Address{}, to.family(), false);
                    if (!e) e = p->start_connect(to);
                    if (e) p->fail(EndReason::error, std::move(e));
                }
            }
            uv_freeaddrinfo(res);
        },
        r->host.c_str(), nullptr, &hints);
    if (rc != 0) {
        std::string h = r->host;
        delete r;
        fail(EndReason::error,
             Error(uv_error_code(rc), "resolve \"" + h + "\": " + uv_strerror(rc)));
        return;
    }
    std::weak_ptr<PipeImpl> weak = self_;
    connect_timer_ = loop_->call_later(conf_->dns_timeout, [weak, h = r->host] {
        auto p = weak.lock();
        if (!p || p->connected_ || p->native_handle() >= 0) return;
        p->fail(EndReason::timeout,
                Error(errc::dns_timeout, "resolve \"" + h + "\": no answer within " +
                                             std::to_string(p->conf_->dns_timeout.count()) +
                                             " ms (NetConf.dns_timeout)"));
    });
}

Error PipeImpl::start_listen() {
    int rc = uv_listen(&h_.stream, conf_->backlog, [](uv_stream_t* s, int status) {
        impl_of(reinterpret_cast<uv_handle_t*>(s))->on_connection(status);
    });
    if (rc != 0) return uv_fail("listen on", rc, local_);
    local_ = sockname(&h_.handle, false);
    connected_ = true;
    return {};
}

void PipeImpl::on_connection(int status) {
    if (ending_) return;
    if (paused_) {
        // Not accepting leaves the connection in the backlog; libuv stops watching the socket
        // until uv_accept is called (by resume()).
        accept_pending_ = status == 0;
        return;
    }
    if (status != 0) {
        // EMFILE and friends: the server stays up; the connection waits in the backlog.
        ++dropped_;
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
        ++dropped_;
        return;
    }
    if (conf_->nodelay) uv_tcp_nodelay(&client->h_.tcp, 1);
    if (conf_->keepalive)
        uv_tcp_keepalive(&client->h_.tcp, 1, static_cast<unsigned>(conf_->keepalive->count()));
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
    client->next_id_ = next_id_;
    // Link into this server's list of open clients (accept order).
    client->server_ = this;
    client->client_prev_ = last_client_;
    if (last_client_)
        last_client_->client_next_ = client.get();
    else
        first_client_ = client.get();
    last_client_ = client.get();
    client->start_reading();
    handle_accepted(client);
}

void PipeImpl::handle_accepted(const std::shared_ptr<PipeImpl>& client) {
    PipePtr as_pipe = client;
    accept_cbs_.call([this] { return ending_; }, static_cast<Pipe&>(*this), as_pipe);
    if (!accept_waiters_.empty()) {
        AcceptWaiter w = std::move(accept_waiters_.front());
        accept_waiters_.erase(accept_waiters_.begin());
        w.timer.cancel();
        AcceptResult r;
        r.status = RecvResult::Status::message;
        r.pipe = as_pipe;
        w.fn(*this, r);
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
    if (!client->ending_)
        client->up_cbs_.call([&] { return client->ending_; }, static_cast<Pipe&>(*client));
}

Error PipeImpl::open_udp(const Address& local_in, const Address& dest) {
    Address local = local_in;
    if (local.empty()) local = Address::any(dest.family(), 0);
    if (!dest.empty() && dest.family() != local.family())
        return Error(errc::invalid_address, "udp: local address " + local.to_string() +
                                                " and destination " + dest.to_string() +
                                                " are of different families");
    int fd = -1;
    if (Error e = bound_socket(SOCK_DGRAM, local.family(), local, fd)) return e;
    auto fail_fd = [&](Error e) {
        ::close(fd);
        return e;
    };
    int rc = udp_open_keeping_reuse(&h_.udp, fd);
    if (rc != 0) return fail_fd(uv_fail("uv_udp_open", rc));
    if (!conf_->do_close) kept_fd_ = ::dup(fd);
    local_ = sockname(&h_.handle, false);
    peer_ = dest;
    connected_ = true;
    start_reading();
    schedule_up();
    return {};
}

Error PipeImpl::adopt_fd(int fd) {
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
        return uv_fail("adopt: getsockopt SO_TYPE", os_error());
    int domain = 0;
    len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain != AF_INET &&
        domain != AF_INET6)
        return Error(errc::wrong_pipe_kind,
                     "adopt: fd " + std::to_string(fd) + " is not an IPv4 or IPv6 socket");
    int acceptconn = 0;
    len = sizeof acceptconn;
    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acceptconn, &len);
    if (type == SOCK_STREAM && !acceptconn) {
        // Checked before libuv takes the fd, so the caller keeps it when it is refused.
        sockaddr_storage ss{};
        socklen_t ss_len = sizeof ss;
        if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &ss_len) != 0)
            return Error(errc::not_connected, "adopt: TCP socket " + std::to_string(fd) +
                                                  " is neither listening nor connected");
    }
    int use_fd = fd;
    if (!conf_->do_close) {
        // libuv closes the fd it holds; a duplicate lets the caller's fd outlive the pipe.
        use_fd = ::dup(fd);
        if (use_fd < 0) return uv_fail("adopt: dup", os_error());
        kept_fd_ = fd;
    }
    int rc;
    if (type == SOCK_STREAM) {
        kind_ = acceptconn ? PipeKind::tcp_server : PipeKind::tcp_client;
        implicit_sub_ = kind_ != PipeKind::tcp_server;
        uv_tcp_init(core_->loop, &h_.tcp);
        handle_inited_ = true;
        h_.handle.data = this;
        rc = uv_tcp_open(&h_.tcp, use_fd);
        if (rc != 0) return uv_fail("adopt: uv_tcp_open", rc);
        local_ = sockname(&h_.handle, false);
        if (kind_ == PipeKind::tcp_server) return start_listen();
        peer_ = sockname(&h_.handle, true);
        if (peer_.empty())
            return Error(errc::not_connected, "adopt: TCP socket " + std::to_string(fd) +
                                                  " is neither listening nor connected");
        if (conf_->nodelay) uv_tcp_nodelay(&h_.tcp, 1);
        if (conf_->keepalive)
            uv_tcp_keepalive(&h_.tcp, 1, static_cast<unsigned>(conf_->keepalive->count()));
        connected_ = true;
        start_reading();
        schedule_up();
        return {};
    }
    if (type == SOCK_DGRAM) {
        kind_ = PipeKind::udp;
        uv_udp_init_ex(core_->loop, &h_.udp, AF_UNSPEC | UV_UDP_RECVMMSG);
        handle_inited_ = true;
        h_.handle.data = this;
        rc = udp_open_keeping_reuse(&h_.udp, use_fd);
        if (rc != 0) return uv_fail("adopt: uv_udp_open", rc);
        local_ = sockname(&h_.handle, false);
        peer_ = sockname(&h_.handle, true);
        udp_connected_ = !peer_.empty();
        connected_ = true;
        start_reading();
        schedule_up();
        return {};
    }
    if (!conf_->do_close) ::close(use_fd);
    kept_fd_ = -1;
    return Error(errc::wrong_pipe_kind,
                 "adopt: fd " + std::to_string(fd) + " is not a stream or datagram socket");
}

void PipeImpl::schedule_up() {
    // Up fires on the next iteration, so callbacks added right after opening see it.
    std::weak_ptr<PipeImpl> weak = self_;
    up_timer_ = loop_->call_later(std::chrono::milliseconds(0), [weak] {
        auto p = weak.lock();
        if (!p || p->ending_) return;
        p->up_cbs_.call([&] { return p->ending_; }, static_cast<Pipe&>(*p));
    });
}

// ---------------------------------------------------------------- reading

void PipeImpl::start_reading() {
    if (reading_ || paused_ || ending_ || !connected_ || conf_->sock_only) return;
    if (flow_blocked_ > 0 || read_eof_) return;
    if (kind_ == PipeKind::tcp_server) return;
    if (kind_ == PipeKind::udp) {
        int rc = uv_udp_recv_start(
            &h_.udp,
            [](uv_handle_t* h, size_t, uv_buf_t* buf) {
                // Several 64 KiB slots let libuv receive a batch with recvmmsg.
                constexpr std::size_t size = 8 * 64 * 1024;
                buf->base = impl_of(h)->core_->read_buffer(size);
                buf->len = size;
            },
            [](uv_udp_t* u, ssize_t nread, const uv_buf_t* buf, const sockaddr* addr,
               unsigned flags) {
                impl_of(reinterpret_cast<uv_handle_t*>(u))->on_udp_read(nread, buf, addr, flags);
            });
        if (rc != 0) {
            fail(EndReason::error, uv_fail("udp receive on", rc, local_));
            return;
        }
    } else {
        int rc = uv_read_start(
            &h_.stream,
            [](uv_handle_t* h, size_t, uv_buf_t* buf) {
                auto* p = impl_of(h);
                buf->base = p->core_->read_buffer(p->conf_->reader_limit);
                buf->len = p->conf_->reader_limit;
            },
            [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
                impl_of(reinterpret_cast<uv_handle_t*>(s))->on_read(nread, buf);
            });
        if (rc != 0) {
            fail(reason_for(rc), uv_fail("read from", rc, peer_));
            return;
        }
    }
    reading_ = true;
}

void PipeImpl::stop_reading() {
    if (!reading_) return;
    reading_ = false;
    if (kind_ == PipeKind::udp)
        uv_udp_recv_stop(&h_.udp);
    else
        uv_read_stop(&h_.stream);
}

void PipeImpl::on_read(ssize_t nread, const uv_buf_t* buf) {
    if (nread > 0) {
        // Replies a pipe makes to its own read leave in one write right after it, without a
        // trip through the loop's flush list.
        read_data_ = std::string_view(buf->base, static_cast<std::size_t>(nread));
        in_read_ = true;
        if (framed_)
            feed_frames(read_data_, peer_);
        else
            deliver(read_data_, peer_);
        in_read_ = false;
        if ((!pending_.empty() || !borrowed_.empty()) && !handle_closing_) {
            if (flush_scheduled) core_->cancel_flush(this);  // by a send outside the read
            flush();
        }
        // Not written (a write in flight, a close): keep a copy, the read buffer is reused.
        if (!borrowed_.empty()) unborrow();
        return;
    }
    if (nread < 0) read_failed(static_cast<int>(nread));
}

void PipeImpl::read_failed(int status) {
    EndReason r = reason_for(status);
    if (r == EndReason::peer_close && decoder_ && decoder_->buffered() > 0 && !paused_) {
        // Whole frames a pause left behind go out first; what remains is a frame cut short.
        feed_frames({}, peer_);
        if (ending_ || paused_) return;
        if (std::size_t held = decoder_ ? decoder_->buffered() : 0; held > 0) {
            end_framing("the stream ended inside a frame (" + std::to_string(held) +
                            " bytes of an incomplete frame received)",
                        held);
            return;
        }
    }
    if (r == EndReason::peer_close) {
        for (PipeImpl* t : links_)
            if (t->linked_to(this)) {
                on_relay_fin();  // a relay passes the FIN on and keeps the other direction
                return;
            }
        fail(r, {});
    } else {
        fail(r, uv_fail("read from", status, peer_));
    }
}

void PipeImpl::on_udp_read(ssize_t nread, const uv_buf_t* buf, const sockaddr* addr,
                           unsigned flags) {
    if (nread < 0) {
        ++dropped_;  // e.g. ICMP errors: a UDP pipe outlives them
        return;
    }
    if (addr == nullptr) return;  // end of a batch, or nothing read
    if (flags & UV_UDP_PARTIAL) {
        ++dropped_;
        return;
    }
    const std::string_view data(buf->base, static_cast<std::size_t>(nread));
    if (framed_)
        feed_frames(data, Address::from_sockaddr(addr));
    else
        deliver(data, Address::from_sockaddr(addr));
}

void PipeImpl::feed_frames(std::string_view data, const Address& from) {
    if (!decoder_)
        decoder_ = std::make_unique<FrameDecoder>(conf_->framer, transport() == Transport::udp
                                                                     ? FrameInput::datagrams
                                                                     : FrameInput::stream);
    feeding_ = true;
    // A pause, a close or a framer switch stops the decoder after the message at hand; it
    // keeps the rest for deliver_kept().
    Error e = decoder_->feed(data, [&](const Frame& f) {
        deliver(f.message, from, f.json_header);
        return !(paused_ || ending_ || framer_switch_);
    });
    feeding_ = false;
    if (e) {
        if (ending_) return;
        if (kind_ == PipeKind::udp) {
            ++dropped_;  // a datagram that breaks the framer is dropped; the pipe stays up
            return;
        }
        end_framing(e.message);
        return;
    }
    if (framer_switch_ && !ending_) {
        switch_decoder();
        deliver_kept();
    }
}

void PipeImpl::end_framing(const std::string& what, std::size_t partial_frame_bytes) {
    // The messages before the bad frame were delivered: their replies still go out.
    ending_ = true;
    end_info_ = EndInfo{EndReason::framing_error,
                        Error(errc::framing_error, "read from " + describe() + ": " + what),
                        partial_frame_bytes};
    begin_close(true);
}

void PipeImpl::switch_decoder() {
    framer_switch_ = false;
    std::string kept = decoder_ ? decoder_->take_buffered() : std::string();
    decoder_.reset();
    framed_ = conf_->framer.kind != FramerKind::raw;
    if (kept.empty()) return;
    if (framed_) {
        decoder_ = std::make_unique<FrameDecoder>(conf_->framer, transport() == Transport::udp
                                                                     ? FrameInput::datagrams
                                                                     : FrameInput::stream);
        decoder_->prime(kept);
    } else {
        raw_kept_ = std::move(kept);
    }
}

void PipeImpl::schedule_kept() {
    if (raw_kept_.empty() && !(decoder_ && decoder_->buffered() > 0)) return;
    std::weak_ptr<PipeImpl> weak = self_;
    kick_timer_ = loop_->call_later(std::chrono::milliseconds(0), [weak] {
        if (auto p = weak.lock()) p->deliver_kept();
    });
}

void PipeImpl::deliver_kept() {
    if (paused_ || ending_ || feeding_) return;
    if (!raw_kept_.empty()) {
        std::string kept = std::move(raw_kept_);
        raw_kept_.clear();
        deliver(kept, peer_);
        return;
    }
    if (decoder_ && decoder_->buffered() > 0) feed_frames({}, peer_);
}

Subscription* PipeImpl::find_sub(SubId id) {
    for (auto& s : subs_)
        if (s->id == id && !s->removed) return s.get();
    return nullptr;
}

void PipeImpl::erase_removed_subs() {
    std::erase_if(subs_, [](const auto& s) { return s->removed; });
    subs_removed_ = false;
}

Subscription* PipeImpl::implicit_sub() {
    if (!implicit_sub_) return nullptr;
    if (auto* s = find_sub(all_messages)) return s;
    auto s = std::make_unique<Subscription>();
    s->id = all_messages;
    subs_.push_back(std::move(s));
    return subs_.back().get();
}

bool PipeImpl::seen_before(std::string_view data, const Address& from) {
    // Identity of a datagram: its source address and a 64-bit hash of its bytes.
    std::uint64_t id = std::hash<std::string_view>{}(data)*0x9e3779b97f4a7c15ull ^
                       static_cast<std::uint64_t>(from.hash()) ^ data.size();
    if (!seen_) seen_ = std::make_unique<SeenIds>();
    if (!seen_->set.insert(id).second) return true;
    seen_->order.push_back(id);
    while (seen_->order.size() > conf_->max_msg_ids) {
        seen_->set.erase(seen_->order.front());
        seen_->order.pop_front();
    }
    return false;
}

void PipeImpl::deliver(std::string_view data, const Address& from, const JsonMessageHeader* json) {
    auto now = uv_now(core_->loop);
    bytes_in_ += data.size();
    ++msgs_in_;
    rate_in_.add(now, data.size());
    if (conf_->enable_msg_ids && kind_ == PipeKind::udp && seen_before(data, from)) {
        ++dropped_;
        return;
    }
    const bool had_links = !links_.empty();
    if (had_links && !forward(data)) return;
    Message msg{data, from, json};
    bool had_callbacks = !message_cbs_.empty();
    message_cbs_.call([this] { return ending_; }, static_cast<Pipe&>(*this), msg);
    if (ending_) return;
    if (!subs_.empty()) {
        dispatch_to_subs(msg);
        if (ending_) return;
    }
    // A linked pipe's messages go to its links: it keeps no implicit queue.
    if (!had_callbacks && message_cbs_.empty() && !had_links)
        if (Subscription* all = implicit_sub()) enqueue(*all, msg);
}

void PipeImpl::dispatch_to_subs(const Message& msg) {
    ++dispatch_depth_;
    // Subscriptions made by a handler start with the next message; removed ones are skipped
    // and erased once no dispatch is running.
    for (std::size_t i = 0, n = subs_.size(); i < n; ++i) {
        Subscription* s = subs_[i].get();
        if (s->removed || s->id == all_messages) continue;
        if (!s->pattern.matches(msg.data)) continue;
        if (!s->from.empty() && !s->from.matches(msg.from)) continue;
        if (s->handler) {
            auto handler = s->handler;  // the handler may unsubscribe itself
            handler(*this, msg);
            if (ending_) break;
        } else {
            enqueue(*s, msg);
        }
    }
    if (--dispatch_depth_ == 0 && subs_removed_) erase_removed_subs();
}

void PipeImpl::enqueue(Subscription& sub, const Message& msg) {
    const std::string_view data = msg.data;
    if (!sub.waiters.empty()) {
        RecvWaiter w = std::move(sub.waiters.front());
        sub.waiters.erase(sub.waiters.begin());
        w.timer.cancel();
        RecvResult r;
        r.status = RecvResult::Status::message;
        r.message.data.assign(data);
        r.message.from = msg.from;
        if (msg.json) r.message.json_header.assign(msg.json->text);
        w.fn(*this, r);
        return;
    }
    sub.queue.push_back(Received{std::string(data), msg.from,
                                 msg.json ? std::string(msg.json->text) : std::string()});
    sub.bytes += data.size();
    // Bounded queues drop the oldest messages.
    while (!sub.queue.empty() &&
           ((conf_->max_qsize != 0 && sub.queue.size() > conf_->max_qsize) ||
            (conf_->max_queue_bytes != 0 && sub.bytes > conf_->max_queue_bytes))) {
        sub.bytes -= sub.queue.front().data.size();
        sub.queue.pop_front();
        ++dropped_;
    }
}

// ---------------------------------------------------------------- writing

Error PipeImpl::write_cap_error(std::size_t more) {
    Error e(errc::write_queue_full, "send on " + describe() + ": " +
                                        std::to_string(queued_bytes() + more) +
                                        " queued bytes would pass NetConf.max_write_queue (" +
                                        std::to_string(conf_->max_write_queue) + ")");
    fail(EndReason::error, e);
    return e;
}

Error PipeImpl::send_check() const {
    if (ending_ || ended_)
        return Error(errc::pipe_ended, "send on " + describe() + ": the pipe has ended (" +
                                           to_string(end_info_.reason) + ")");
    if (kind_ == PipeKind::tcp_server)
        return Error(
            errc::wrong_pipe_kind,
            "send on " + describe() + ": a server does not send; send on its accepted pipes");
    if (shut_requested_)
        return Error(errc::pipe_ended, "send on " + describe() +
                                           ": the write side was shut down (a relayed half-close)");
    return {};
}

Error PipeImpl::send_bytes(std::string_view bytes) {
    if (ending_ || ended_ || kind_ == PipeKind::tcp_server || kind_ == PipeKind::udp ||
        shut_requested_) [[unlikely]]
        return send_not_stream(bytes);
    if (framed_) return send_framed(bytes);
    std::size_t queued = queued_bytes() + bytes.size();
    if (conf_->max_write_queue != 0 && queued > conf_->max_write_queue) [[unlikely]]
        return write_cap_error(bytes.size());
    if (in_read_ && pending_.empty() && borrowed_.empty() && segs_.empty() && in_read_data(bytes))
        borrowed_ = bytes;  // written (or copied) before on_read() returns
    else {
        if (!borrowed_.empty()) unborrow();
        pending_.append(bytes);
    }
    bytes_out_ += bytes.size();
    ++msgs_out_;
    rate_out_.add(uv_now(core_->loop), bytes.size());
    if (queued >= conf_->high_watermark) note_queued();
    if (connected_ && !in_read_) core_->schedule_flush(this);
    return {};
}

Error PipeImpl::send_not_stream(std::string_view bytes) {
    if (Error e = send_check()) return e;
    if (peer_.empty())
        return Error(errc::not_connected,
                     "send on " + describe() + ": no default destination; use send_to()");
    return send_datagram(bytes, peer_);
}

Error PipeImpl::send_framed(std::string_view bytes) {
    if (!borrowed_.empty()) unborrow();  // framed bytes go after it
    const std::size_t before = pending_.size();
    if (Error e = frame_into(bytes, pending_)) return e;
    const std::size_t wire = pending_.size() - before;
    // The cap counts what would be queued without this frame plus the frame.
    if (conf_->max_write_queue != 0 && queued_bytes() > conf_->max_write_queue) {
        pending_.resize(before);
        return write_cap_error(wire);
    }
    bytes_out_ += bytes.size();
    ++msgs_out_;
    rate_out_.add(uv_now(core_->loop), bytes.size());
    note_queued();
    if (connected_ && !in_read_) core_->schedule_flush(this);
    return {};
}

Error PipeImpl::frame_into(std::string_view payload, std::string& out) {
    Error e = detail::encode_valid(conf_->framer, payload, out);
    if (e) e.message = "send on " + describe() + ": " + e.message;
    return e;
}

Error PipeImpl::send_kept(std::string_view bytes, ReadBlock* block) {
    if (Error e = send_check()) return e;
    const std::size_t size = bytes.size();
    if (connected_ && !write_in_flight_ && pending_.empty() && segs_.empty()) {
        // Nothing queued: straight from the read buffer to the socket.
        uv_buf_t b = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(size));
        int n = uv_try_write(&h_.stream, &b, 1);
        if (n < 0 && n != UV_EAGAIN) {
            Error e = uv_fail("write to", n, peer_);
            fail(reason_for(n), e);
            return e;
        }
        if (n > 0) bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    if (!bytes.empty()) {
        if (over_write_cap(bytes.size())) return write_cap_error(bytes.size());
        // Owned bytes queued earlier go first.
        if (!borrowed_.empty()) unborrow();
        if (!pending_.empty()) {
            segs_.push_back(WriteSeg{nullptr, std::move(pending_), nullptr, 0});
            pending_ = std::string();
            segs_bytes_ += segs_.back().owned.size();
        }
        LoopCore::retain(block);
        segs_.push_back(WriteSeg{block, {}, bytes.data(), bytes.size()});
        segs_bytes_ += bytes.size();
    }
    bytes_out_ += size;
    ++msgs_out_;
    rate_out_.add(uv_now(core_->loop), size);
    if (!bytes.empty()) {
        note_queued();
        if (connected_) core_->schedule_flush(this);
    }
    return {};
}

void PipeImpl::release_segs(std::vector<WriteSeg>& segs) noexcept {
    for (auto& s : segs)
        if (s.block) core_->release(s.block);
    segs.clear();
}

void PipeImpl::flush_segs() {
    if (!borrowed_.empty()) unborrow();
    if (!pending_.empty()) {
        segs_.push_back(WriteSeg{nullptr, std::move(pending_), nullptr, 0});
        pending_ = std::string();
        segs_bytes_ += segs_.back().owned.size();
    }
    constexpr std::size_t kMaxIov = 64;
    auto fill_iov = [&](std::vector<WriteSeg>& segs) {
        iov_.clear();
        for (auto& s : segs) {
            if (iov_.size() == kMaxIov) break;
            const char* p = s.block ? s.p : s.owned.data() + s.n;  // owned: n = bytes written
            std::size_t len = s.block ? s.n : s.owned.size() - s.n;
            iov_.push_back(uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(len)));
        }
    };
    fill_iov(segs_);
    int n = uv_try_write(&h_.stream, iov_.data(), static_cast<unsigned>(iov_.size()));
    if (n < 0 && n != UV_EAGAIN) {
        fail(reason_for(n), uv_fail("write to", n, peer_));
        return;
    }
    std::size_t done = n > 0 ? static_cast<std::size_t>(n) : 0;
    segs_bytes_ -= done;
    std::size_t first = 0;  // segments written in full
    while (done > 0) {
        WriteSeg& s = segs_[first];
        std::size_t left = s.block ? s.n : s.owned.size() - s.n;
        std::size_t take = std::min(left, done);
        done -= take;
        if (take == left) {
            if (s.block) core_->release(s.block);
            ++first;
        } else if (s.block) {
            s.p += take;
            s.n -= take;
        } else {
            s.n += take;
        }
    }
    segs_.erase(segs_.begin(), segs_.begin() + static_cast<std::ptrdiff_t>(first));
    if (segs_.empty()) {
        after_written();
        return;
    }
    // The rest goes under one uv_write; the segments stay alive until it completes.
    const auto count = static_cast<std::ptrdiff_t>(std::min(segs_.size(), kMaxIov));
    for (auto it = segs_.begin(); it != segs_.begin() + count; ++it) {
        segs_bytes_ -= it->block ? it->n : it->owned.size() - it->n;
        inflight_segs_.push_back(std::move(*it));
    }
    segs_.erase(segs_.begin(), segs_.begin() + count);
    fill_iov(inflight_segs_);
    if (!write_req_) write_req_ = std::make_unique<uv_write_t>();
    write_req_->data = this;
    int rc = uv_write(write_req_.get(), &h_.stream, iov_.data(), static_cast<unsigned>(iov_.size()),
                      [](uv_write_t* req, int status) {
                          static_cast<PipeImpl*>(req->data)->on_write_done(status);
                      });
    if (rc != 0) {
        release_segs(inflight_segs_);
        fail(reason_for(rc), uv_fail("write to", rc, peer_));
        return;
    }
    write_in_flight_ = true;
}

void PipeImpl::flush() {
    if (!connected_ || handle_closing_ || write_in_flight_) return;
    if (!segs_.empty()) [[unlikely]] {
        flush_segs();
        return;
    }
    // borrowed_ and pending_ are never both in use.
    std::string_view out = borrowed_.empty() ? std::string_view(pending_) : borrowed_;
    if (out.empty()) return;
    uv_buf_t b;
    b.base = const_cast<char*>(out.data());
    b.len = out.size();
    int n = uv_try_write(&h_.stream, &b, 1);
    if (n == static_cast<int>(out.size())) {
        pending_.clear();
        borrowed_ = {};
        if (close_after_flush_ || above_high_ || shut_requested_) after_written();
        return;
    }
    if (!borrowed_.empty()) unborrow();  // the rest waits for the socket in a copy
    write_rest(n);
}

void PipeImpl::unborrow() {
    pending_.assign(borrowed_);
    borrowed_ = {};
}

void PipeImpl::write_rest(int n) {
    if (n < 0 && n != UV_EAGAIN) {
        fail(reason_for(n), uv_fail("write to", n, peer_));
        return;
    }
    inflight_.swap(pending_);
    pending_.clear();
    inflight_off_ = n > 0 ? static_cast<std::size_t>(n) : 0;
    uv_buf_t b = uv_buf_init(inflight_.data() + inflight_off_,
                             static_cast<unsigned>(inflight_.size() - inflight_off_));
    if (!write_req_) write_req_ = std::make_unique<uv_write_t>();
    write_req_->data = this;
    int rc = uv_write(write_req_.get(), &h_.stream, &b, 1, [](uv_write_t* req, int status) {
        static_cast<PipeImpl*>(req->data)->on_write_done(status);
    });
    if (rc != 0) {
        inflight_.clear();
        fail(reason_for(rc), uv_fail("write to", rc, peer_));
        return;
    }
    write_in_flight_ = true;
}

void PipeImpl::on_write_done(int status) {
    write_in_flight_ = false;
    inflight_.clear();
    inflight_off_ = 0;
    if (!inflight_segs_.empty()) release_segs(inflight_segs_);
    if (status == UV_ECANCELED) return;
    if (status != 0) {
        fail(reason_for(status), uv_fail("write to", status, peer_));
        return;
    }
    // A burst can leave a large buffer behind; don't keep it for the life of the pipe.
    if (inflight_.capacity() > 4 * conf_->reader_limit) inflight_.shrink_to_fit();
    if (!pending_.empty() || !segs_.empty()) flush();
    if (!handle_closing_) after_written();
}

void PipeImpl::after_written() {
    // flush() calls this only when one of close_after_flush_, above_high_, shut_requested_ is
    // set; keep the checks in step.
    if (close_after_flush_) {
        if (queued_bytes() == 0) close_handle_now();
        return;
    }
    if (shut_requested_ && !shut_issued_) try_shutdown();
    if (above_high_ && queued_bytes() <= conf_->low_watermark) {
        above_high_ = false;
        if (throttling_) set_throttle(false);
        if (!ending_) drain_cbs_.call([this] { return ending_; }, static_cast<Pipe&>(*this));
    }
}

Error PipeImpl::send_datagram(std::string_view bytes, const Address& to) {
    if (ending_ || ended_)
        return Error(errc::pipe_ended, "send on " + describe() + ": the pipe has ended (" +
                                           to_string(end_info_.reason) + ")");
    if (kind_ != PipeKind::udp)
        return Error(errc::wrong_pipe_kind,
                     "send_to on " + describe() + ": only UDP pipes send datagrams to an address");
    if (to.empty() || to.port() == 0)
        return Error(errc::invalid_address, "send_to on " + describe() + ": destination \"" +
                                                to.to_string() + "\" has no port");
    const std::size_t payload_size = bytes.size();
    if (framed_) {
        frame_scratch_.clear();
        if (Error e = frame_into(bytes, frame_scratch_)) return e;
        bytes = frame_scratch_;
    }
    if (bytes.size() > max_datagram(to))
        return Error(errc::message_too_large, "send_to " + to.to_string() + ": " +
                                                  std::to_string(bytes.size()) +
                                                  " bytes do not fit in one datagram (at most " +
                                                  std::to_string(max_datagram(to)) + ")");
    auto count = [&] {
        bytes_out_ += payload_size;
        ++msgs_out_;
        rate_out_.add(uv_now(core_->loop), payload_size);
    };
    // A connect()ed socket (adopted) sends to its peer without an address.
    const bool to_peer = udp_connected_ && to == peer_;
    if (udp_queued_ == 0) {
        uv_buf_t b =
            uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
        int n = uv_udp_try_send(&h_.udp, &b, 1, to_peer ? nullptr : to.sockaddr());
        if (n >= 0) {
            count();
            return {};
        }
        if (n != UV_EAGAIN && n != UV_ENOBUFS && n != UV_ENOMEM) return uv_fail("send_to", n, to);
    }
    if (over_write_cap(bytes.size())) return write_cap_error(bytes.size());
    // The datagram waits for the socket: the request owns a copy of the bytes.
    auto* r = new UdpSendReq{{}, self_, to_peer ? Address{} : to, std::string(bytes)};
    if (int rc = submit_udp(r, &h_.udp); rc != 0) {
        delete r;
        return uv_fail("send_to", rc, to);
    }
    udp_queued_ += bytes.size();
    count();
    note_queued();
    return {};
}

}  // namespace detail
}  // namespace pipeworks

// ---------------------------------------------------------------- linking

namespace pipeworks::detail {

bool PipeImpl::linked_to(const PipeImpl* target) const noexcept {
    return std::find(links_.begin(), links_.end(), target) != links_.end();
}

bool PipeImpl::forward(std::string_view data) {
    // A target that fails during its send drops its link, so the index moves only past a
    // target that is still there.
    std::size_t i = 0;
    while (i < links_.size()) {
        PipeImpl* t = links_[i];
        // Large forwards of bytes still in the loop's read block keep the block instead of
        // copying. Small ones are copied (and gathered): a kept block holding a few bytes would
        // let a relay's memory pass its watermarks by a block per queued read, so a block is
        // kept only for at least a quarter of its size.
        ReadBlock* block = core_->read_block;
        const bool keep = t->kind_ != PipeKind::udp && !t->framed_ && block &&
                          data.size() >= block->size / 4 && block->holds(data.data(), data.size());
        Error e = keep ? t->send_kept(data, block) : t->send_bytes(data);
        if (e && !t->ending_ && !t->ended_) {
            // The target cannot carry this message (larger than a datagram, over its framer's
            // limit): an error of the relay, not a silent truncation.
            fail(EndReason::error, Error(e.code, "forward from " + describe() + " to " +
                                                     t->describe() + ": " + e.message));
            return false;
        }
        if (ending_) return false;
        if (i < links_.size() && links_[i] == t) ++i;
    }
    return true;
}

void PipeImpl::set_throttle(bool on) {
    throttling_ = on;
    // A feeder resumed here may read (and forward) at once: walk a copy.
    auto feeders = feeders_;
    for (PipeImpl* f : feeders) {
        if (on)
            f->block_flow();
        else
            f->unblock_flow();
    }
}

void PipeImpl::block_flow() {
    ++flow_blocked_;
    stop_reading();
}

void PipeImpl::unblock_flow() {
    if (flow_blocked_ > 0 && --flow_blocked_ == 0) start_reading();
}

void PipeImpl::on_relay_fin() {
    read_eof_ = true;
    stop_reading();
    std::vector<std::shared_ptr<PipeImpl>> partners;
    for (PipeImpl* t : links_)
        if (t->linked_to(this) && t->self_) partners.push_back(t->self_);
    for (auto& t : partners) t->shutdown_write();
    maybe_finish();
}

void PipeImpl::shutdown_write() {
    if (kind_ == PipeKind::udp || shut_requested_ || ending_) return;
    shut_requested_ = true;
    try_shutdown();
}

void PipeImpl::try_shutdown() {
    if (shut_issued_ || handle_closing_ || !connected_) return;
    if (!pending_.empty() || !segs_.empty() || write_in_flight_)
        return;  // after_written()
                 // comes back here
    shut_issued_ = true;
    if (!shutdown_req_) shutdown_req_ = std::make_unique<uv_shutdown_t>();
    shutdown_req_->data = this;
    int rc = uv_shutdown(shutdown_req_.get(), &h_.stream, [](uv_shutdown_t* req, int status) {
        auto* p = static_cast<PipeImpl*>(req->data);
        if (status == UV_ECANCELED || p->handle_closing_) return;
        if (status != 0) {
            p->fail(reason_for(status), p->uv_fail("shutdown", status, p->peer_));
            return;
        }
        p->shut_done_ = true;
        p->maybe_finish();
    });
    if (rc != 0) fail(reason_for(rc), uv_fail("shutdown", rc, peer_));
}

void PipeImpl::maybe_finish() {
    if (!read_eof_ || ending_) return;
    bool fed = false;  // a partner can still send through this pipe
    for (PipeImpl* f : feeders_)
        if (!f->read_eof_ && !f->ending_) fed = true;
    if (shut_done_ || (!shut_requested_ && !fed)) {
        ending_ = true;
        end_info_ = EndInfo{EndReason::peer_close, {}};
        begin_close(true);
    }
}

void PipeImpl::end_links() {
    if (links_.empty() && feeders_.empty()) return;
    std::vector<std::shared_ptr<PipeImpl>> partners;
    for (PipeImpl* t : links_)
        if (t->linked_to(this) && t->self_) partners.push_back(t->self_);
    for (PipeImpl* t : links_) std::erase(t->feeders_, this);
    links_.clear();
    for (PipeImpl* f : feeders_) std::erase(f->links_, this);
    auto feeders = std::move(feeders_);
    feeders_.clear();
    if (throttling_) {
        throttling_ = false;
        for (PipeImpl* f : feeders) f->unblock_flow();
    }
    if (core_->destroying) return;
    // A relay passes the end on: a reset at once (as a reset), any other end after what the
    // partner has queued; a partner whose own peer already sent FIN only finishes its writes.
    for (auto& t : partners) {
        if (t->ending_) continue;
        if (end_info_.reason == EndReason::peer_reset) {
            if (t->kind_ != PipeKind::udp) t->edit_conf().linger = std::chrono::seconds(0);
            t->fail(EndReason::peer_reset, Error(uv_error_code(UV_ECONNRESET),
                                                 "the relayed pipe " + describe() + " was reset"));
        } else if (t->read_eof_) {
            t->maybe_finish();
        } else {
            t->ending_ = true;
            t->end_info_ =
                EndInfo{EndReason::local_close,
                        Error(errc::pipe_ended, "the relayed pipe " + describe() + " ended (" +
                                                    to_string(end_info_.reason) + ")")};
            t->begin_close(true);
        }
    }
}

}  // namespace pipeworks::detail
