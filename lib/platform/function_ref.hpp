// FunctionRef: a non-owning reference to a callable, for callbacks that are only called during
// the call they are passed to (a filter's buffer and plaintext callbacks). Unlike
// std::function it never allocates and costs one indirect call, with nothing to build or
// destroy: those run for every read.
//
// Threading: a plain value; calling it is as thread-safe as the callable it refers to.
#pragma once

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace pipeworks::detail {

template <class Signature>
class FunctionRef;

template <class R, class... Args>
class FunctionRef<R(Args...)> {
public:
    // Refers to f (a function, or an object that must outlive every call through this).
    template <class F, std::enable_if_t<!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> &&
                                            std::is_invocable_r_v<R, F&, Args...>,
                                        int> = 0>
    FunctionRef(F&& f) noexcept {  // NOLINT(google-explicit-constructor): stands in for a lambda
        using T = std::remove_reference_t<F>;
        if constexpr (std::is_function_v<T>) {
            // A function has no object address; function pointers convert among themselves.
            target_.function = reinterpret_cast<void (*)()>(&f);
            call_ = [](Target t, Args... args) -> R {
                return std::invoke(reinterpret_cast<T*>(t.function), std::forward<Args>(args)...);
            };
        } else {
            target_.object = const_cast<void*>(static_cast<const void*>(std::addressof(f)));
            call_ = [](Target t, Args... args) -> R {
                return std::invoke(*static_cast<T*>(t.object), std::forward<Args>(args)...);
            };
        }
    }

    R operator()(Args... args) const { return call_(target_, std::forward<Args>(args)...); }

private:
    union Target {
        void* object;
        void (*function)();
    };
    Target target_{};
    R (*call_)(Target, Args...);
};

}  // namespace pipeworks::detail
