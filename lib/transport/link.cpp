// Linking pipes: relays, their backpressure, and how a FIN or an end passes through.
#include "transport/pipe_impl.hpp"
#include "transport/socket_util.hpp"

#include <algorithm>

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
        // Large forwards of bytes still in the loop's read (or plaintext) block keep the block
        // instead of copying. Small ones are copied (and gathered): a kept block holding a few
        // bytes would let a relay's memory pass its watermarks by a block per queued read, so a
        // block is kept only for at least a quarter of its size. A TLS target encrypts what it
        // sends, including what is queued before its connection (and its filter) is up.
        ReadBlock* block = core_->block_holding(data.data(), data.size());
        const bool keep = t->kind_ != PipeKind::udp && !t->framed_ && !t->filter_ && !t->tls_ &&
                          block && data.size() >= block->size / 4;
        Error e = keep ? t->send_kept(data, block) : t->send_bytes(data);
        if (e && !t->ending() && !t->ended()) {
            // The target cannot carry this message (larger than a datagram, over its framer's
            // limit): an error of the relay, not a silent truncation.
            fail(EndReason::error, Error(e.code, "forward from " + describe() + " to " +
                                                     t->describe() + ": " + e.message));
            return false;
        }
        if (ending()) return false;
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

bool PipeImpl::in_relay() const noexcept {
    for (const PipeImpl* t : links_)
        if (t->linked_to(this)) return true;
    return false;
}

void PipeImpl::on_relay_fin() {
    relayed_eof_ = true;
    std::vector<std::shared_ptr<PipeImpl>> partners;
    for (PipeImpl* t : links_)
        if (t->linked_to(this) && t->self_) partners.push_back(t->self_);
    for (auto& t : partners) (void)t->request_shutdown();  // refused only when it has ended
    maybe_finish();
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
        if (t->ending()) continue;
        if (end_info_.reason == EndReason::peer_reset) {
            if (t->kind_ != PipeKind::udp) t->edit_conf().linger = std::chrono::seconds(0);
            t->fail(EndReason::peer_reset, Error(uv_error_code(UV_ECONNRESET),
                                                 "the relayed pipe " + describe() + " was reset"));
        } else if (t->read_eof_) {
            t->maybe_finish();
        } else {
            t->end(EndReason::local_close,
                   Error(errc::pipe_ended, "the relayed pipe " + describe() + " ended (" +
                                               to_string(end_info_.reason) + ")"),
                   Drain::graceful);
        }
    }
}

}  // namespace pipeworks::detail
