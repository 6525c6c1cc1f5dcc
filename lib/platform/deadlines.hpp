// Deadlines: the loop's per-connection timeouts (idle, frame) kept in one heap behind one
// uv_timer, so an idle pipe carries a few words instead of a timer handle of its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pipeworks::detail {

// One deadline, embedded in its owner (a pipe). Armed deadlines live in their loop's heap.
struct Deadline {
    static constexpr std::size_t kNotArmed = ~std::size_t{0};
    std::uint64_t at_ms = 0;               // loop clock (uv_now after uv_update_time)
    std::size_t index = kNotArmed;         // position in the heap
    void (*expired)(Deadline&) = nullptr;  // runs on the loop thread once at_ms has passed
    bool armed() const noexcept { return index != kNotArmed; }
};

// The armed deadlines of one loop, earliest first: a binary min-heap of pointers whose nodes
// record their own position, so moving or removing one is O(log n) without a search.
// Deadlines that expire() has taken out of the heap stay armed() until their call, so an
// `expired` callback can still disarm (and then destroy) or re-arm any of them.
class DeadlineQueue {
public:
    DeadlineQueue() = default;
    DeadlineQueue(const DeadlineQueue&) = delete;
    DeadlineQueue& operator=(const DeadlineQueue&) = delete;

    bool empty() const noexcept { return heap_.empty(); }
    std::size_t size() const noexcept { return heap_.size(); }
    // The earliest at_ms in the heap. Not for an empty queue.
    std::uint64_t earliest() const noexcept { return heap_.front()->at_ms; }

    // Arms d for at_ms, or moves it there if it is armed already.
    void arm(Deadline& d, std::uint64_t at_ms);
    // Makes d not armed, so it will not expire; harmless if it is not armed.
    void disarm(Deadline& d) noexcept;
    // Calls `expired` for every deadline due at now_ms, earliest first, each disarmed just
    // before its call. Deadlines armed during the calls wait for the next expire() even if
    // they are due, so a callback that re-arms itself for "now" cannot hold the loop here.
    // If a call throws, the deadlines not yet called stay armed and the exception propagates.
    // Not reentrant.
    void expire(std::uint64_t now_ms);
    // Makes every deadline not armed without calling anything (the loop is going away).
    void clear() noexcept;

private:
    // Marks an index as a position in due_ rather than in the heap. kNotArmed has it too, but
    // its position part is larger than any vector.
    static constexpr std::size_t kDue = ~(~std::size_t{0} >> 1);

    void place(std::size_t i, Deadline* d) noexcept {
        heap_[i] = d;
        d->index = i;
    }
    void sift_up(std::size_t i) noexcept;
    void sift_down(std::size_t i) noexcept;
    void remove_at(std::size_t i) noexcept;

    std::vector<Deadline*> heap_;
    std::vector<Deadline*> due_;  // taken out by expire() and not called yet; null if disarmed
};

}  // namespace pipeworks::detail
