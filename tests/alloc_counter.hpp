// Counts heap allocations by replacing the global operator new/delete of the test executable
// that includes this header (include it from exactly one source file of that executable). The
// replacement also takes the allocations of libpipeworks, which resolves operator new here.
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>

namespace {

std::atomic<std::size_t> g_allocations{0};
// The largest single allocation since reset_largest_allocation(): a size a peer claims must
// never be allocated, and only the size shows that (a count does not).
std::atomic<std::size_t> g_largest_allocation{0};

// Out of line, so the compiler does not pair malloc and free across the replaced operators.
[[gnu::noinline]] void* counted_alloc(std::size_t n) noexcept {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    std::size_t seen = g_largest_allocation.load(std::memory_order_relaxed);
    while (n > seen && !g_largest_allocation.compare_exchange_weak(seen, n)) {
    }
    return std::malloc(n == 0 ? 1 : n);
}
[[gnu::noinline]] void counted_free(void* p) noexcept {
    std::free(p);
}

}  // namespace

void* operator new(std::size_t n) {
    if (void* p = counted_alloc(n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
    return operator new(n);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    return counted_alloc(n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    return counted_alloc(n);
}
void operator delete(void* p) noexcept {
    counted_free(p);
}
void operator delete[](void* p) noexcept {
    counted_free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    counted_free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    counted_free(p);
}

namespace pw_test {

inline std::size_t allocations() {
    return g_allocations.load(std::memory_order_relaxed);
}
inline std::size_t largest_allocation() {
    return g_largest_allocation.load(std::memory_order_relaxed);
}
inline void reset_largest_allocation() {
    g_largest_allocation.store(0, std::memory_order_relaxed);
}

}  // namespace pw_test
