// The input stage: every received byte not yet delivered, and the framer that decodes them.
// Undelivered bytes have one home at a time: the decoder's carry on a framed pipe, raw_kept_ on
// a raw one; a framer switch moves them, so they are delivered once, in order.
#include "transport/pipe_impl.hpp"
#include "transport/socket_util.hpp"

namespace pipeworks::detail {

namespace {
FrameInput input_kind(PipeKind kind) {
    return kind == PipeKind::udp ? FrameInput::datagrams : FrameInput::stream;
}
}  // namespace

void PipeImpl::feed_frames(std::string_view data, const Address& from) {
    if (!decoder_) decoder_ = std::make_unique<FrameDecoder>(conf_->framer, input_kind(kind_));
    feeding_ = true;
    bool delivered = false;
    // A pause, a close or a framer switch stops the decoder after the message at hand; it
    // keeps the rest for deliver_kept().
    Error e = decoder_->feed(data, [&](const Frame& f) {
        delivered = true;
        deliver(f.message, from, f.json_header);
        return !(paused_ || ending() || framer_switch_);
    });
    feeding_ = false;
    if (e) {
        if (ending()) return;
        if (kind_ == PipeKind::udp) {
            ++dropped_;  // a datagram that breaks the framer is dropped; the pipe stays up
            return;
        }
        end_framing(e.message);
        return;
    }
    if (ending()) return;
    if (framer_switch_) {
        switch_decoder();
        deliver_kept();
        return;
    }
    if (kind_ != PipeKind::udp && conf_->frame_timeout.count() > 0)
        update_frame_deadline(delivered);
}

void PipeImpl::update_frame_deadline(bool delivered_some) {
    // What a pause keeps is whole frames the application has not taken: no deadline for those.
    const bool partial = decoder_ && decoder_->buffered() > 0 && !paused_;
    if (!partial) {
        core_->disarm(frame_deadline_);
        return;
    }
    // A frame completed and another began: the new one gets its own full bound (+1 ms: the
    // cached clock may lag the real moment by up to one, and the bound is a minimum).
    if (!frame_deadline_.armed() || delivered_some)
        core_->arm(frame_deadline_, uv_now(core_->loop) + 1 +
                                        static_cast<std::uint64_t>(conf_->frame_timeout.count()));
}

void PipeImpl::input_behind_kept(std::string_view data) {
    raw_kept_.append(data);
    if (!paused_ && !feeding_) deliver_kept();
}

void PipeImpl::end_framing(const std::string& what, std::size_t partial_frame_bytes) {
    // The messages before the bad frame were delivered: their replies still go out.
    end(EndReason::framing_error,
        Error(errc::framing_error, "read from " + describe() + ": " + what), Drain::graceful);
    end_info_.partial_frame_bytes = partial_frame_bytes;
}

void PipeImpl::switch_decoder() {
    framer_switch_ = false;
    // The one home of undelivered bytes moves with the framer.
    std::string kept = std::move(raw_kept_);
    raw_kept_.clear();
    if (decoder_) kept += decoder_->take_buffered();
    decoder_.reset();
    core_->disarm(frame_deadline_);
    framed_ = conf_->framer.kind != FramerKind::raw;
    if (kept.empty()) return;
    if (framed_) {
        decoder_ = std::make_unique<FrameDecoder>(conf_->framer, input_kind(kind_));
        decoder_->prime(kept);
    } else {
        raw_kept_ = std::move(kept);
    }
}

void PipeImpl::schedule_kept() {
    if (kick_scheduled_ || ending()) return;
    if (!has_kept() && !(read_eof_ && !eof_delivered_)) return;
    kick_scheduled_ = true;
    core_->defer([p = self_] {
        p->kick_scheduled_ = false;
        if (p->paused_ || p->ending()) return;
        p->deliver_kept();
        if (p->read_eof_) p->finish_input();
    });
}

void PipeImpl::deliver_kept() {
    if (paused_ || ending() || feeding_) return;
    if (!raw_kept_.empty()) {
        std::string kept = std::move(raw_kept_);
        raw_kept_.clear();
        deliver(kept, peer_);
        return;
    }
    if (decoder_ && decoder_->buffered() > 0) feed_frames({}, peer_);
}

}  // namespace pipeworks::detail
