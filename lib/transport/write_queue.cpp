// The write queue of a stream pipe: one queue, one path to the socket, and the half-close.
#include "transport/pipe_impl.hpp"
#include "transport/socket_util.hpp"

#include <algorithm>

namespace pipeworks::detail {

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
    if (ending() || ended())
        return Error(errc::pipe_ended, "send on " + describe() + ": the pipe has ended (" +
                                           to_string(end_info_.reason) + ")");
    if (kind_ == PipeKind::tcp_server)
        return Error(
            errc::wrong_pipe_kind,
            "send on " + describe() + ": a server does not send; send on its accepted pipes");
    if (shut_requested_)
        return Error(errc::pipe_ended, "send on " + describe() +
                                           ": the write side was shut down (shutdown(), or a "
                                           "half-close a relay passed on)");
    return {};
}

Error PipeImpl::send_bytes(std::string_view bytes) {
    if (ending() || ended() || kind_ == PipeKind::tcp_server || kind_ == PipeKind::udp ||
        shut_requested_) [[unlikely]]
        return send_not_stream(bytes);
    if (framed_) return send_framed(bytes);
    std::size_t queued = queued_bytes() + bytes.size();
    if (conf_->max_write_queue != 0 && queued > conf_->max_write_queue) [[unlikely]]
        return write_cap_error(bytes.size());
    if (in_read_ && pending_.empty() && borrowed_.empty() && segs_.empty() && in_read_data(bytes))
        borrowed_ = bytes;  // written (or copied) before on_read() returns
    else if (filter_ && bytes.size() >= kEncryptAtSend && tls_ && tls_->established) [[unlikely]] {
        if (Error e = send_filtered(bytes)) return e;
    } else {
        if (!borrowed_.empty()) unborrow();
        pending_.append(bytes);
    }
    count_sent(bytes.size());
    if (queued >= conf_->high_watermark) note_queued();
    if (connected_ && !in_read_) core_->schedule_flush(this);
    return {};
}

Error PipeImpl::send_not_stream(std::string_view bytes) {
    if (Error e = send_check()) return e;
    if (peer_.empty() && !udp_resolving())
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
    count_sent(bytes.size());
    note_queued();
    if (connected_ && !in_read_) core_->schedule_flush(this);
    return {};
}

Error PipeImpl::send_unframed(std::string_view bytes) {
    if (Error e = send_check()) return e;
    if (kind_ == PipeKind::udp) {
        if (peer_.empty() && !udp_resolving())
            return Error(errc::not_connected,
                         "send on " + describe() + ": no default destination; use send_to()");
        return send_datagram(bytes, peer_, false);
    }
    if (over_write_cap(bytes.size())) return write_cap_error(bytes.size());
    if (!borrowed_.empty()) unborrow();
    pending_.append(bytes);
    count_sent(bytes.size());
    note_queued();
    if (connected_ && !in_read_) core_->schedule_flush(this);
    return {};
}

Error PipeImpl::send_json(std::string_view content, std::string_view type,
                          std::string_view encoding) {
    if (Error e = send_check()) return e;
    if (conf_->framer.kind != FramerKind::json_header)
        return Error(errc::invalid_config, "send_json on " + describe() +
                                               ": the pipe's framer is " +
                                               to_string(conf_->framer.kind) + ", not json_header");
    if (!borrowed_.empty()) unborrow();
    const std::size_t before = pending_.size();
    if (Error e = encode_json_message(conf_->framer, content, type, encoding, pending_)) {
        e.message = "send_json on " + describe() + ": " + e.message;
        return e;
    }
    if (conf_->max_write_queue != 0 && queued_bytes() > conf_->max_write_queue) {
        const std::size_t wire = pending_.size() - before;
        pending_.resize(before);
        return write_cap_error(wire);
    }
    count_sent(content.size());
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
    count_sent(size);
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
    if (!connected_ || closing() || write_in_flight_) return;
    if (filter_) [[unlikely]] {
        filter_pending();
        if (closing()) return;
    }
    if (!segs_.empty()) [[unlikely]] {
        flush_segs();
        return;
    }
    const std::string_view out = queued_plain();
    if (out.empty()) return;
    uv_buf_t b;
    b.base = const_cast<char*>(out.data());
    b.len = out.size();
    int n = uv_try_write(&h_.stream, &b, 1);
    if (n > 0) last_activity_ms_ = uv_now(core_->loop);
    if (n == static_cast<int>(out.size())) {
        pending_.clear();
        borrowed_ = {};
        // after_written() has nothing to do unless one of these holds; keep them in step.
        if (life_ == Life::draining || above_high_ || shut_requested_ ||
            pending_.capacity() > 4 * conf_->reader_limit)
            after_written();
        else if (filter_) [[unlikely]]
            release_idle_buffers();
        return;
    }
    if (!borrowed_.empty()) unborrow();  // the rest waits for the socket in a copy
    write_rest(n);
}

Error PipeImpl::send_filtered(std::string_view bytes) {
    // A full record's worth or more: encrypting it now reads it where it is (a relay's read
    // block) instead of copying it into pending_ first; what was queued before goes first.
    if (!borrowed_.empty()) unborrow();
    Error e = pending_.empty() ? Error{} : filter_->outgoing(pending_, filtered_);
    pending_.clear();
    if (!e) e = filter_->outgoing(bytes, filtered_);
    if (e) fail(EndReason::error, e);
    return e;
}

void PipeImpl::filter_pending() {
    // An echo borrowed from the read is encrypted where it is, without a copy first.
    const std::string_view plain = queued_plain();
    if (!plain.empty()) {
        Error e = filter_->outgoing(plain, filtered_);
        borrowed_ = {};
        pending_.clear();
        if (e) {
            fail(EndReason::error, std::move(e));
            return;
        }
    }
    // A close_notify asked for while plaintext was queued goes after the last of it.
    if (tls_ && tls_->close_wanted && !tls_->close_sent) tls_close_notify();
    filter_->pending_output(filtered_);
    pending_.swap(filtered_);
    filtered_.clear();
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
    last_activity_ms_ = uv_now(core_->loop);
    // A filter's own bytes produced while this write was out wait in the filter.
    if (!pending_.empty() || !segs_.empty() || filter_) flush();
    if (!closing()) after_written();
}

void PipeImpl::after_written() {
    if (life_ == Life::draining) {
        if (queued_bytes() == 0) close_handle_now();
        return;
    }
    if (shut_requested_ && !shut_issued_) try_shutdown();
    if (above_high_ && queued_bytes() <= conf_->low_watermark) {
        above_high_ = false;
        if (throttling_) set_throttle(false);
        if (self_throttled_) {
            self_throttled_ = false;
            start_reading();
        }
        if (!ending())
            guarded("drain", [&] {
                drain_cbs_.call([this] { return ending(); }, static_cast<Pipe&>(*this));
            });
    }
    if (queued_bytes() == 0) release_idle_buffers();
}

void PipeImpl::release_idle_buffers() noexcept {
    // A burst's buffers go back once the queue stays empty; a steady flow below the keep
    // keeps its capacity (no allocation per message), and one above it (a relay at full
    // speed) keeps it while it flows, because a fresh large buffer costs a page fault per
    // 4 KiB when it is filled.
    const std::size_t keep = buffer_keep();
    if (pending_.capacity() <= keep && inflight_.capacity() <= keep &&
        filtered_.capacity() <= keep && !(filter_ && filter_->holds_buffers()))
        return;
    if (!release_deadline_.armed() && !ending())
        core_->arm(release_deadline_, uv_now(core_->loop) + kReleaseDelayMs);
}

void PipeImpl::release_expired(Deadline& d) {
    PipeImpl* p = static_cast<PipeDeadline&>(d).pipe;
    if (p->closing() || p->queued_bytes() != 0 || p->write_in_flight_) return;  // re-armed then
    // Quiet for the whole delay: a pipe still reading or writing keeps its buffers.
    const std::uint64_t now = uv_now(p->core_->loop);
    if (now < p->last_activity_ms_ + kReleaseDelayMs) {
        p->core_->arm(p->release_deadline_, p->last_activity_ms_ + kReleaseDelayMs);
        return;
    }
    const std::size_t keep = p->buffer_keep();
    // (Assigning an empty string would keep the capacity: swap it out.)
    if (p->pending_.capacity() > keep) std::string().swap(p->pending_);
    if (p->inflight_.capacity() > keep) std::string().swap(p->inflight_);
    if (p->filtered_.capacity() > keep) std::string().swap(p->filtered_);
    if (p->filter_) p->filter_->release_buffers();
}

Error PipeImpl::request_shutdown() {
    if (kind_ == PipeKind::tcp_server || kind_ == PipeKind::udp)
        return Error(errc::wrong_pipe_kind,
                     "shutdown on " + describe() + ": only stream pipes have a write side to shut");
    if (ending())
        return Error(errc::pipe_ended, "shutdown on " + describe() + ": the pipe has ended (" +
                                           to_string(end_info_.reason) + ")");
    if (shut_requested_) return {};
    shut_requested_ = true;
    try_shutdown();
    return {};
}

void PipeImpl::try_shutdown() {
    if (shut_issued_ || closing() || !connected_) return;
    if (tls_ && !tls_->established) return;  // tls_established() comes back here
    // after_written() comes back here once the queue is empty.
    if (!pending_.empty() || !borrowed_.empty() || !segs_.empty() || !filtered_.empty() ||
        write_in_flight_)
        return;
    if (tls_) [[unlikely]] {
        tls_close_notify();
        if (tls_holds_output()) {
            flush();  // the close_notify goes first; its write comes back here
            return;
        }
    }
    shut_issued_ = true;
    if (!shutdown_req_) shutdown_req_ = std::make_unique<uv_shutdown_t>();
    shutdown_req_->data = this;
    int rc = uv_shutdown(shutdown_req_.get(), &h_.stream, [](uv_shutdown_t* req, int status) {
        auto* p = static_cast<PipeImpl*>(req->data);
        if (status == UV_ECANCELED || p->closing()) return;
        // The peer finished and then closed its socket entirely, so it refuses the FIN (or a
        // TLS close_notify before it). When nothing of the application's was sent after the
        // peer finished, nothing was lost: both directions are done, not an error.
        if (p->read_eof_ && p->bytes_out_ == p->bytes_out_at_eof_ &&
            (status == UV_ENOTCONN || status == UV_ECONNRESET || status == UV_EPIPE))
            status = 0;
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
    if (!read_eof_ || ending()) return;
    if (shut_done_) {
        end(EndReason::peer_close, {}, Drain::graceful);  // both directions are done
        return;
    }
    // A relay's pipe whose peer finished ends once no partner can send through it.
    if (!relayed_eof_ || shut_requested_) return;
    for (PipeImpl* f : feeders_)
        if (!f->read_eof_ && !f->ending()) return;
    end(EndReason::peer_close, {}, Drain::graceful);
}

}  // namespace pipeworks::detail
