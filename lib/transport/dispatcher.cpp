// The dispatcher: a received message to links, callbacks, subscriptions and waiters.
#include "transport/pipe_impl.hpp"
#include "transport/socket_util.hpp"

#include <algorithm>

namespace pipeworks::detail {

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
    if (had_callbacks) {
        guarded("message", [&] {
            message_cbs_.call([this] { return ending(); }, static_cast<Pipe&>(*this), msg);
        });
        if (ending()) return;
    }
    if (!subs_.empty()) {
        dispatch_to_subs(msg);
        if (ending()) return;
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
            guarded("subscription handler", [&] { handler(*this, msg); });
            if (ending()) break;
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
        call_recv(w.fn, r);
        return;
    }
    sub.queue.push_back(Received{std::string(data), msg.from,
                                 msg.json ? std::string(msg.json->text) : std::string()});
    sub.bytes += entry_bytes(sub.queue.back());
    // Bounded queues drop the oldest messages.
    while (!sub.queue.empty() &&
           ((conf_->max_qsize != 0 && sub.queue.size() > conf_->max_qsize) ||
            (conf_->max_queue_bytes != 0 && sub.bytes > conf_->max_queue_bytes))) {
        sub.bytes -= entry_bytes(sub.queue.front());
        sub.queue.pop_front();
        ++dropped_;
    }
}

void PipeImpl::give_back_message(SubId sub, RecvResult& r) {
    Subscription* s = find_sub(sub);
    if (s == nullptr || ending() || r.status != RecvResult::Status::message) return;
    if (!s->waiters.empty()) {
        RecvWaiter w = std::move(s->waiters.front());
        s->waiters.erase(s->waiters.begin());
        w.timer.cancel();
        call_recv(w.fn, r);
        return;
    }
    s->queue.push_front(std::move(r.message));
    s->bytes += entry_bytes(s->queue.front());
    // It was the oldest message: if the queue is now over its bound, it is the one to go.
    if ((conf_->max_qsize != 0 && s->queue.size() > conf_->max_qsize) ||
        (conf_->max_queue_bytes != 0 && s->bytes > conf_->max_queue_bytes)) {
        s->bytes -= entry_bytes(s->queue.front());
        s->queue.pop_front();
        ++dropped_;
    }
}

void PipeImpl::call_recv(const RecvFn& fn, RecvResult& r) {
    guarded("recv", [&] { fn(*this, r); });
}

namespace {

RecvResult ended_result(const EndInfo& info) {
    RecvResult r;
    r.status = RecvResult::Status::ended;
    r.end = info;
    return r;
}

std::optional<Received> pop(Subscription& s) {
    if (s.queue.empty()) return std::nullopt;
    Received m = std::move(s.queue.front());
    s.queue.pop_front();
    s.bytes -= entry_bytes(m);
    return m;
}

}  // namespace

std::optional<Received> PipeImpl::try_recv(SubId sub) {
    Subscription* s = sub == all_messages ? implicit_sub() : find_sub(sub);
    return s ? pop(*s) : std::nullopt;
}

void PipeImpl::recv(SubId sub, std::optional<std::chrono::milliseconds> timeout, RecvFn fn) {
    // Never inside this call: a handler that calls recv() again must not recurse, however many
    // messages are queued.
    core_->defer([p = std::static_pointer_cast<PipeImpl>(shared_from_this()), sub, timeout,
                  fn = std::move(fn)]() mutable {
        Subscription* s = sub == all_messages ? p->implicit_sub() : p->find_sub(sub);
        if (s) {
            if (auto m = pop(*s)) {
                RecvResult r;
                r.status = RecvResult::Status::message;
                r.message = std::move(*m);
                p->call_recv(fn, r);
                return;
            }
        }
        if (!s || p->ending()) {
            RecvResult r = ended_result(
                p->ending() ? p->end_info_
                            : EndInfo{EndReason::local_close,
                                      Error(errc::invalid_config,
                                            "recv: no subscription " + std::to_string(sub))});
            p->call_recv(fn, r);
            return;
        }
        if (p->eof_delivered_ && !p->in_relay()) {
            RecvResult r;
            r.status = RecvResult::Status::finished;
            p->call_recv(fn, r);
            return;
        }
        p->wait_for(*s, sub, timeout, std::move(fn));
    });
}

void PipeImpl::wait_for(Subscription& s, SubId sub,
                        std::optional<std::chrono::milliseconds> timeout, RecvFn fn) {
    auto id = next_waiter_++;
    auto wait = timeout.value_or(conf_->recv_timeout);
    std::weak_ptr<PipeImpl> weak = self_;
    Timer t = loop_->call_later(wait, [weak, sub, id] {
        auto p = weak.lock();
        if (!p) return;
        auto* s = p->find_sub(sub);
        if (!s) return;
        auto it =
            std::find_if(s->waiters.begin(), s->waiters.end(), [&](auto& w) { return w.id == id; });
        if (it == s->waiters.end()) return;
        auto w = std::move(*it);
        s->waiters.erase(it);
        RecvResult r;
        r.status = RecvResult::Status::timeout;
        p->call_recv(w.fn, r);
    });
    s.waiters.push_back(RecvWaiter{id, std::move(fn), t});
}

std::vector<RecvWaiter> PipeImpl::take_waiters() {
    // Taken whole before any handler runs: a handler may subscribe, unsubscribe or recv again.
    std::vector<RecvWaiter> waiters;
    for (auto& s : subs_) {
        for (auto& w : s->waiters) waiters.push_back(std::move(w));
        s->waiters.clear();
    }
    return waiters;
}

void PipeImpl::wake_waiters_finished() {
    for (auto& w : take_waiters()) {
        w.timer.cancel();
        RecvResult r;
        r.status = RecvResult::Status::finished;
        call_recv(w.fn, r);
    }
}

void PipeImpl::run_end_callbacks() {
    // Waiters first (they belong to calls the application made), then end callbacks.
    for (auto& w : take_waiters()) {
        w.timer.cancel();
        RecvResult r = ended_result(end_info_);
        call_recv(w.fn, r);
    }
    auto accept_waiters = std::move(accept_waiters_);
    accept_waiters_.clear();
    for (auto& w : accept_waiters) {
        w.timer.cancel();
        AcceptResult r;
        r.status = RecvResult::Status::ended;
        r.end = end_info_;
        guarded("accept", [&] { w.fn(*this, r); });
    }
    life_ = Life::ended;
    guarded("end",
            [&] { end_cbs_.call([] { return false; }, static_cast<Pipe&>(*this), end_info_); });
    auto fns = std::move(closed_fns_);
    closed_fns_.clear();
    for (auto& fn : fns) guarded("close", [&] { fn(*this); });
}

}  // namespace pipeworks::detail
