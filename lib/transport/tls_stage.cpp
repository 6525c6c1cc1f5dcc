// TLS on a stream pipe: the filter goes in when the TCP connection is up; the handshake runs
// under NetConf::ssl_handshake; "up" (a client's up callbacks, a server's accept) waits for it;
// close_notify goes out before a FIN or a graceful close, and an EOF without one from the peer
// is a truncation, never a clean end.
#include "transport/pipe_impl.hpp"
#include "transport/tls_context.hpp"
#include "transport/tls_filter.hpp"

namespace pipeworks::detail {

Error PipeImpl::prepare_tls(TlsRole role, std::string host) {
    auto ctx = TlsContext::get(*core_, conf_->tls, role);
    if (!ctx) return ctx.error();
    use_tls_context(std::move(*ctx), std::move(host));
    return {};
}

void PipeImpl::use_tls_context(std::shared_ptr<TlsContext> context, std::string host) {
    tls_ = std::make_unique<TlsStage>();
    tls_->context = std::move(context);
    tls_->host = std::move(host);
    tls_->handshake.pipe = this;
    tls_->handshake.expired = &PipeImpl::handshake_expired;
}

Error PipeImpl::start_tls() {
    TlsStage& t = *tls_;
    const TlsContext& ctx = *t.context;
    std::unique_ptr<TlsFilter> f;
    if (ctx.role() == TlsRole::client) {
        // The name to check: the settings' server_name, else the host connect() was given,
        // else the address connected to (an IP address SAN).
        std::string name = !conf_->tls.server_name.empty() ? conf_->tls.server_name
                           : !t.host.empty()               ? t.host
                                                           : peer_.host();
        std::string key;
        SSL_SESSION* session = nullptr;
        if (ctx.resumes()) {
            key = name + "|" + peer_.to_string();
            session = ctx.session_for(key);
        }
        f = std::make_unique<TlsFilter>(ctx.ctx(), TlsRole::client, name,
                                        ctx.verifies() ? name : std::string(), key, session);
        if (session != nullptr) SSL_SESSION_free(session);
    } else {
        f = std::make_unique<TlsFilter>(ctx.ctx(), TlsRole::server);
    }
    if (f->failed()) {
        std::string wire;
        return f->outgoing({}, wire);  // repeats the setup's error
    }
    f->on_established = [this] { tls_established(); };
    t.filter = f.get();
    filter_ = std::move(f);
    core_->arm(t.handshake, core_->fresh_now_ms() + 1 +
                                static_cast<std::uint64_t>(conf_->ssl_handshake.count()));
    return {};
}

void PipeImpl::tls_established() {
    TlsStage& t = *tls_;
    t.established = true;
    core_->disarm(t.handshake);
    if (ending()) {
        // Closed during the handshake: what was sent leaves now (the read that completed the
        // handshake flushes it), close_notify after it; after_written() then closes.
        if (life_ == Life::draining) tls_close_notify();
        return;
    }
    if (kind_ == PipeKind::tcp_accepted) {
        // The server hands the pipe over only now, with its callbacks as they are now.
        if (server_ != nullptr) server_->deliver_accepted(self_);
    } else {
        guarded("up",
                [&] { up_cbs_.call([this] { return ending(); }, static_cast<Pipe&>(*this)); });
    }
    if (ending()) return;
    if (!pending_.empty() || !segs_.empty()) core_->schedule_flush(this);
    if (shut_requested_) try_shutdown();
}

void PipeImpl::handshake_expired(Deadline& d) {
    PipeImpl* p = static_cast<PipeDeadline&>(d).pipe;
    if (p->ending() || p->tls_->established) return;
    p->tls_fail(Error(errc::tls_handshake_timeout,
                      p->describe() + ": the TLS handshake did not complete within " +
                          std::to_string(p->conf_->ssl_handshake.count()) +
                          " ms (NetConf.ssl_handshake)"));
}

void PipeImpl::tls_after_read() {
    if (ending() || read_eof_ || !tls_->filter->peer_closed()) return;
    // close_notify: the peer sends no more; what it said stands (a FIN, the TLS way).
    read_eof_ = true;
    bytes_out_at_eof_ = bytes_out_;
    stop_reading();
    finish_input();
}

void PipeImpl::tls_eof() {
    if (!tls_->established) {
        tls_fail(Error(errc::tls_failed, describe() +
                                             ": the peer closed the connection during the TLS "
                                             "handshake (not a TLS peer, or it refused ours)"));
        return;
    }
    end(EndReason::error,
        Error(errc::tls_truncated,
              describe() + ": the peer closed the connection without TLS close_notify; what "
                           "it sent may be cut short (unexpected eof)"),
        Drain::now);
}

void PipeImpl::tls_fail(Error e) {
    if (closing()) return;
    if (ending()) {
        // A close waiting for its bytes: they cannot go out now, and the end says so.
        end_info_.reason = EndReason::error;
        end_info_.error = std::move(e);
        close_handle_now();
        return;
    }
    if (e.code == make_error_code(errc::tls_failed) && e.message.find(describe()) != 0)
        e.message = describe() + ": " + e.message;
    // The filter's alert tells the peer why, if the socket takes it now.
    std::string alert;
    if (filter_ && !write_in_flight_) filter_->pending_output(alert);
    if (!alert.empty() && pending_.empty() && connected_) {
        uv_buf_t b = uv_buf_init(alert.data(), static_cast<unsigned>(alert.size()));
        (void)uv_try_write(&h_.stream, &b, 1);
    }
    const EndReason reason =
        e == errc::tls_handshake_timeout ? EndReason::timeout : EndReason::error;
    if (kind_ == PipeKind::tcp_accepted && !tls_->established) {
        // Nobody has seen this pipe: the server's on_error hears of it, no end callback runs.
        if (server_ != nullptr) server_->report_handshake_failure(e);
    }
    end(reason, std::move(e), Drain::now);
}

void PipeImpl::tls_close_notify() {
    if (!tls_ || !tls_->established || tls_->close_sent || !tls_->filter) return;
    tls_->close_wanted = true;
    // Plaintext still queued must be encrypted first: SSL_write refuses after SSL_shutdown.
    if (!pending_.empty() || !borrowed_.empty()) return;
    tls_->close_sent = true;
    tls_->filter->close_notify();
}

bool PipeImpl::tls_holds_output() const noexcept {
    return filter_ && filter_->buffered() > 0;
}

TlsInfo PipeImpl::tls_info_impl() const {
    if (!tls_) return {};
    if (!tls_->filter) {
        TlsInfo i;
        i.enabled = true;
        return i;
    }
    return tls_->filter->info();
}

}  // namespace pipeworks::detail
