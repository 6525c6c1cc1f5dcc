// The connector: a TCP client's name resolution and connect, bounded in time.
#include "transport/pipe_impl.hpp"
#include "transport/socket_util.hpp"

#include <netdb.h>
#include <sys/socket.h>

namespace pipeworks::detail {

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
    if (ending()) {
        // close() while connecting, with bytes queued: deliver them, then close.
        if (!(life_ == Life::draining) || closing()) return;
        if (status != 0) {
            close_handle_now();
            return;
        }
        connected_ = true;
        local_ = sockname(&h_.handle, false);
        if (tls_) {
            // They go out once the handshake is done (tls_established), then close_notify.
            if (Error e = start_tls()) {
                end_info_.error = std::move(e);
                close_handle_now();
                return;
            }
            start_reading();
        }
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
    opened();
    if (tls_) {
        // Up when the handshake is done (tls_established); the ClientHello leaves now.
        if (Error e = start_tls()) {
            fail(EndReason::error, std::move(e));
            return;
        }
        start_reading();
        flush();
        return;
    }
    guarded("up", [&] { up_cbs_.call([this] { return ending(); }, static_cast<Pipe&>(*this)); });
    if (ending()) return;
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
            if (p && !p->ending()) {
                p->connect_timer_.cancel();
                if (status != 0 || res == nullptr) {
                    p->fail(EndReason::error,
                            Error(uv_error_code(status ? status : UV_EAI_NONAME),
                                  "resolve \"" + r->host + "\": " + uv_strerror(status)));
                } else {
                    // Every address is a candidate (Happy Eyeballs), in the resolver's order.
                    std::vector<Address> all;
                    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next)
                        if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
                            all.push_back(Address::from_sockaddr(ai->ai_addr).with_port(r->port));
                    p->begin_attempts(std::move(all), r->host + ":" + std::to_string(r->port));
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

}  // namespace pipeworks::detail
