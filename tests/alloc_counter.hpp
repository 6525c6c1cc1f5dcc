// Counts heap allocations by replacing the global operator new/delete of the test executable
// that includes this header (include it from exactly one source file of that executable). The
// replacement also takes the allocations of libpipeworks, which resolves operator new here.
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>

namespace {

std::atomic<std::size_t> g_allocations{0};

// Out of line, so the compiler does not pair malloc and free across the replaced operators.
[[gnu::noinline]] void* counted_alloc(std::size_t n) noexcept {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
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

}  // namespace pw_test
