// RateWindow: bytes per second over the last few seconds, for Pipe::stats().
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

namespace pipeworks::detail {

// One-second buckets; most adds fall in the current second and skip the division.
class RateWindow {
public:
    static constexpr unsigned kBuckets = 5;
    void add(std::uint64_t now_ms, std::uint64_t n) noexcept {
        if (now_ms < cur_end_ms_) {
            bytes_[cur_] += n;
            return;
        }
        roll(now_ms, n);
    }
    double rate(std::uint64_t now_ms, std::uint64_t since_ms) const noexcept {
        auto now_sec = static_cast<std::uint32_t>(now_ms / 1000);
        std::uint64_t total = 0;
        for (unsigned i = 0; i < kBuckets; ++i)
            if (now_sec - sec_[i] < kBuckets) total += bytes_[i];
        // The window spans the last kBuckets seconds, or the pipe's life if shorter.
        double span_ms = static_cast<double>(std::min<std::uint64_t>(
            kBuckets * 1000ull, std::max<std::uint64_t>(now_ms - since_ms, 1)));
        if (now_ms - since_ms >= kBuckets * 1000ull)
            span_ms = static_cast<double>((kBuckets - 1) * 1000ull + now_ms % 1000 + 1);
        return static_cast<double>(total) * 1000.0 / span_ms;
    }

private:
    [[gnu::noinline]] void roll(std::uint64_t now_ms, std::uint64_t n) noexcept {
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
    std::array<std::uint32_t, kBuckets> sec_{};
    std::array<std::uint64_t, kBuckets> bytes_{};
    std::uint64_t cur_end_ms_ = 0;  // end of the current bucket's second
    unsigned cur_ = 0;
};

}  // namespace pipeworks::detail
