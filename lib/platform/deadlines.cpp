#include "platform/deadlines.hpp"

#include "platform/loop_core.hpp"

#include <exception>
#include <limits>

#ifdef __linux__
#include <sys/timerfd.h>
#include <unistd.h>

#include <ctime>
#endif

namespace pipeworks::detail {

void DeadlineQueue::sift_up(std::size_t i) noexcept {
    Deadline* d = heap_[i];
    while (i > 0) {
        std::size_t parent = (i - 1) / 2;
        if (heap_[parent]->at_ms <= d->at_ms) break;
        place(i, heap_[parent]);
        i = parent;
    }
    place(i, d);
}

void DeadlineQueue::sift_down(std::size_t i) noexcept {
    Deadline* d = heap_[i];
    const std::size_t n = heap_.size();
    for (;;) {
        std::size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && heap_[child + 1]->at_ms < heap_[child]->at_ms) ++child;
        if (d->at_ms <= heap_[child]->at_ms) break;
        place(i, heap_[child]);
        i = child;
    }
    place(i, d);
}

void DeadlineQueue::remove_at(std::size_t i) noexcept {
    Deadline* d = heap_[i];
    Deadline* last = heap_.back();
    heap_.pop_back();
    d->index = Deadline::kNotArmed;
    if (last == d) return;
    place(i, last);
    if (i > 0 && heap_[(i - 1) / 2]->at_ms > last->at_ms)
        sift_up(i);
    else
        sift_down(i);
}

void DeadlineQueue::arm(Deadline& d, std::uint64_t at_ms) {
    if (d.index != Deadline::kNotArmed && (d.index & kDue) == 0) {
        const std::uint64_t old = d.at_ms;
        d.at_ms = at_ms;
        if (at_ms < old)
            sift_up(d.index);
        else if (at_ms > old)
            sift_down(d.index);
        return;
    }
    heap_.push_back(&d);  // first: if it throws, d is as it was
    if (d.index != Deadline::kNotArmed) due_[d.index & ~kDue] = nullptr;
    d.at_ms = at_ms;
    d.index = heap_.size() - 1;
    sift_up(d.index);
}

void DeadlineQueue::disarm(Deadline& d) noexcept {
    if (d.index == Deadline::kNotArmed) return;
    if (d.index & kDue) {
        due_[d.index & ~kDue] = nullptr;
        d.index = Deadline::kNotArmed;
        return;
    }
    remove_at(d.index);
}

void DeadlineQueue::expire(std::uint64_t now_ms) {
    std::size_t i = 0;
    try {
        // Everything due is taken out before the first call: what the calls arm goes back
        // into the heap and waits for the next expire().
        while (!heap_.empty() && heap_.front()->at_ms <= now_ms) {
            Deadline* d = heap_.front();
            due_.push_back(d);  // first: if it throws, d is still in the heap
            remove_at(0);
            d->index = kDue | (due_.size() - 1);
        }
        for (; i < due_.size(); ++i) {
            Deadline* d = due_[i];
            if (d == nullptr) continue;
            due_[i] = nullptr;
            d->index = Deadline::kNotArmed;
            if (d->expired) d->expired(*d);
        }
    } catch (...) {
        for (; i < due_.size(); ++i) {
            Deadline* rest = due_[i];
            if (rest == nullptr) continue;
            due_[i] = nullptr;
            rest->index = Deadline::kNotArmed;
            arm(*rest, rest->at_ms);
        }
        due_.clear();
        throw;
    }
    due_.clear();
}

void DeadlineQueue::clear() noexcept {
    for (Deadline* d : heap_) d->index = Deadline::kNotArmed;
    for (Deadline* d : due_)
        if (d) d->index = Deadline::kNotArmed;
    heap_.clear();
    due_.clear();
}

// ---- LoopCore's side: one uv_timer set for the earliest deadline

namespace {
constexpr std::uint64_t kNever = std::numeric_limits<std::uint64_t>::max();
}

void LoopCore::init_deadline_timer() noexcept {
    uv_timer_init(loop, &deadline_timer);
    deadline_timer.data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(&deadline_timer));
#ifdef __linux__
    const int fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0) return;  // out of descriptors: the libuv timer does the same, a little slower
    if (uv_poll_init(loop, &deadline_poll, fd) != 0) {
        ::close(fd);
        return;
    }
    deadline_poll.data = this;
    uv_poll_start(&deadline_poll, UV_READABLE, [](uv_poll_t* h, int, int) {
        auto* c = static_cast<LoopCore*>(h->data);
        std::uint64_t expirations;
        // Nothing to read: set again or stopped since it became readable.
        if (::read(c->deadline_fd, &expirations, sizeof expirations) != sizeof expirations) return;
        // The loop's time was taken before its callbacks ran; what is due is measured now.
        uv_update_time(c->loop);
        c->expire_deadlines();
    });
    uv_unref(reinterpret_cast<uv_handle_t*>(&deadline_poll));
    deadline_fd = fd;
#endif
}

void LoopCore::start_deadline_timer(std::uint64_t at_ms, std::uint64_t min_delay) noexcept {
    const std::uint64_t now = uv_now(loop);
    std::uint64_t delay = at_ms > now ? at_ms - now : 0;
    if (delay < min_delay) delay = min_delay;
    deadline_timer_at = at_ms;
#ifdef __linux__
    if (deadline_fd >= 0) {
        itimerspec t{};
        t.it_value.tv_sec = static_cast<time_t>(delay / 1000);
        t.it_value.tv_nsec = static_cast<long>(delay % 1000) * 1'000'000;
        if (delay == 0) t.it_value.tv_nsec = 1;  // all zero would stop it
        ::timerfd_settime(deadline_fd, 0, &t, nullptr);
        return;
    }
#endif
    uv_timer_start(
        &deadline_timer, [](uv_timer_t* t) { static_cast<LoopCore*>(t->data)->expire_deadlines(); },
        delay, 0);
}

void LoopCore::expire_deadlines() noexcept {
    deadline_timer_at = kNever;  // one-shot: it is not running now
    expiring_deadlines = true;
    try {
        deadlines.expire(uv_now(loop));
    } catch (...) {
        report_exception(std::current_exception());
    }
    expiring_deadlines = false;
    // At least 1 ms: libuv 1.44 runs a 0 ms timer started here in this same timer phase, so a
    // deadline that keeps re-arming itself for "now" would never let the loop poll.
    if (!deadlines.empty()) start_deadline_timer(deadlines.earliest(), 1);
}

void LoopCore::arm(Deadline& d, std::uint64_t at_ms) {
    if (destroying) return;  // the heap is being cleared; d must stay not armed
    deadlines.arm(d, at_ms);
    // Only an earlier deadline restarts the timer. When the earliest one moves later (an idle
    // timeout pushed back by a read), the timer fires early, finds nothing due, and is set
    // again: cheaper than restarting it on every read.
    if (!expiring_deadlines && deadlines.earliest() < deadline_timer_at)
        start_deadline_timer(deadlines.earliest(), 0);
}

void LoopCore::disarm(Deadline& d) noexcept {
    // The timer is left set even when nothing is armed any more: it fires once, finds nothing,
    // and stops. Stopping it here would cost a system call (timerfd_settime) each time a pipe
    // with the loop's only deadline arms and disarms it, which can be every message.
    deadlines.disarm(d);
}

std::uint64_t LoopCore::fresh_now_ms() noexcept {
    uv_update_time(loop);
    return uv_now(loop);
}

}  // namespace pipeworks::detail
