// The connector: a pipe's name resolution (a TCP client's, a UDP destination's) and a TCP
// client's connect, bounded in time.
#include "transport/pipe_impl.hpp"
#include "transport/socket_util.hpp"

#include <pipeworks/resolver.hpp>

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

// A name goes to the loop's Resolver, A and AAAA as two queries; the attempts start as soon
// as RFC 8305 allows: at once with an answer of the preferred family (or the only one asked),
// else 50 ms after the other family's answer (its "resolution delay"), or when the preferred
// one fails. Addresses that come later join the attempts under way. A UDP pipe takes the first
// address the same rule picks as its destination.
void PipeImpl::start_resolve(std::string host, std::uint16_t port, FamilyPolicy policy) {
    resolving_ = std::make_unique<Resolving>();
    Resolving& r = *resolving_;
    r.host = std::move(host);
    r.port = port;
    r.pending = policy == FamilyPolicy::ipv4_only || policy == FamilyPolicy::ipv6_only ? 1 : 2;
    r.preferred = policy == FamilyPolicy::ipv4_only || policy == FamilyPolicy::any_ipv4_first
                      ? Family::ipv4
                      : Family::ipv6;
    std::weak_ptr<PipeImpl> weak = self_;
    r.id = Resolver::of(*loop_).lookup(r.host, port, policy, conf_->dns_timeout,
                                       [weak](Family f, Result<std::vector<Address>> got) {
                                           if (auto p = weak.lock()) p->resolved(f, std::move(got));
                                       });
}

void PipeImpl::resolved(Family f, Result<std::vector<Address>> got) {
    if (ending() || !resolving_) return;
    Resolving& r = *resolving_;
    --r.pending;
    if (got) {
        if (attempts_) {
            add_attempt_addresses(*got);
        } else {
            r.held.insert(f == r.preferred ? r.held.begin() : r.held.end(), got->begin(),
                          got->end());
            if (f == r.preferred || r.pending == 0) {
                start_resolved_attempts();
            } else {
                std::weak_ptr<PipeImpl> weak = self_;
                r.delay = loop_->call_later(std::chrono::milliseconds(50), [weak] {
                    if (auto p = weak.lock(); p && !p->ending() && !p->attempts_ && p->resolving_)
                        p->start_resolved_attempts();
                });
            }
        }
    } else {
        // The most telling failure: a missing family (no_address) only when nothing else.
        if (!r.error || r.error == errc::no_address) r.error = got.error();
        if (attempts_) {
            if (r.pending == 0 && attempts_->running.empty() && attempts_->queue.empty())
                start_next_attempt();  // nothing more is coming: the attempts' failure
        } else if (!r.held.empty() && (f == r.preferred || r.pending == 0)) {
            start_resolved_attempts();
        } else if (r.pending == 0) {
            Error e = std::move(r.error);
            const bool timeout = e == errc::dns_timeout;
            if (timeout) e.message += " (NetConf.dns_timeout)";
            resolving_.reset();
            fail(timeout ? EndReason::timeout : EndReason::error, std::move(e));
            return;
        }
    }
    // A UDP pipe's destination is set (resolving_ is gone); or every answer is in and the
    // attempts go on by themselves.
    if (resolving_ && r.pending == 0 && attempts_) resolving_.reset();
}

void PipeImpl::start_resolved_attempts() {
    Resolving& r = *resolving_;
    r.delay.cancel();
    std::vector<Address> held = std::move(r.held);
    if (kind_ == PipeKind::udp) {
        // One destination: the other family's answer is not waited for.
        cancel_resolve();
        open_resolved_udp(held.front());
        return;
    }
    begin_attempts(std::move(held), r.host + ":" + std::to_string(r.port));
}

void PipeImpl::cancel_resolve() noexcept {
    if (!resolving_) return;
    resolving_->delay.cancel();
    // A loop being destroyed shuts its resolver down itself, and runs no callback.
    if (!core_->destroying) Resolver::of(*loop_).cancel(resolving_->id);
    resolving_.reset();
}

}  // namespace pipeworks::detail
