// Resolver: asynchronous name resolution (c-ares) on a Loop, bounded in time (docs/dns.md).
#pragma once

#include <pipeworks/address.hpp>
#include <pipeworks/error.hpp>
#include <pipeworks/export.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

namespace pipeworks {

class Loop;

// Which address families a lookup asks for, and in which order resolve() returns them.
enum class FamilyPolicy : std::uint8_t { any_ipv6_first, any_ipv4_first, ipv4_only, ipv6_only };

// A loop's resolver settings (Resolver::configure). A plain value.
struct ResolverConf {
    std::vector<Address> servers;  // DNS servers (port 0 means 53); empty: the system's resolv.conf
    bool hosts_file = true;        // /etc/hosts is read before DNS
};

// One per loop (Resolver::of). Bound to its loop's thread: every member and every callback
// runs there. Callbacks may start, cancel and configure lookups. ~Loop runs none of the
// callbacks still due. No cache: every lookup asks /etc/hosts and the servers again.
class PIPEWORKS_API Resolver {
public:
    using Id = std::uint64_t;  // 0 is never a valid id
    using FamilyFn = std::function<void(Family, Result<std::vector<Address>>)>;
    using ResolveFn = std::function<void(Result<std::vector<Address>>)>;

    // The loop's resolver (made on first use, with ResolverConf{} or what configure() set).
    static Resolver& of(Loop& loop);
    // Replaces the loop's resolver settings; queries in flight finish on the old channel.
    // Errors: bad server address (errc::invalid_address), c-ares refusing the settings
    // (errc::dns_failed); the settings in use then stay.
    static Error configure(Loop& loop, const ResolverConf& conf);

    // Looks `host` up: A and AAAA as two separate queries, as the policy allows; `each` runs
    // once per family asked, as soon as that family's answer (or error, or the timeout) is
    // in, never inside the call, never after cancel(). `port` goes into every Address. A
    // numeric host answers without a query, for its own family only (one call; a policy that
    // excludes it gets errc::no_address). A timeout <= 0 fails with errc::invalid_config.
    Id lookup(std::string_view host, std::uint16_t port, FamilyPolicy policy,
              std::chrono::milliseconds timeout, FamilyFn each);
    // The same, all families together: `done` runs once with the addresses ordered by the
    // policy (any_*: families interleaved, the preferred first, RFC 8305 style), or, when
    // every family failed, the most telling error (host_not_found, dns_failed, dns_timeout,
    // no_address, in that order).
    Id resolve(std::string_view host, std::uint16_t port, FamilyPolicy policy,
               std::chrono::milliseconds timeout, ResolveFn done);
    // No callback of `id` runs after this. False when it already completed (or is unknown).
    bool cancel(Id id);

    Resolver(const Resolver&) = delete;
    Resolver& operator=(const Resolver&) = delete;

private:
    struct Impl;
    explicit Resolver(std::unique_ptr<Impl> impl);
    ~Resolver();
    std::unique_ptr<Impl> impl_;
};

}  // namespace pipeworks
