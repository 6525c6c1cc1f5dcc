// The Resolver: c-ares channels driven by the loop. c-ares says which sockets it wants watched
// (one uv_poll each) and when it next needs a turn (one uv_timer per channel); pipeworks bounds
// each lookup itself with a deadline on the loop's heap, because c-ares' own retries can run
// for over a minute.
#include <pipeworks/loop.hpp>
#include <pipeworks/resolver.hpp>

#include "platform/loop_core.hpp"

#include <ares.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

namespace pipeworks {

namespace {

using Addresses = std::vector<Address>;

const char* family_label(Family f) {
    return f == Family::ipv4 ? "IPv4" : "IPv6";
}

std::string quoted(std::string_view host) {
    return "resolve \"" + std::string(host) + "\"";
}

// Checked here rather than by c-ares, whose EBADNAME does not say what is wrong.
std::optional<std::string> malformed(std::string_view host) {
    std::string_view name = host;
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);  // absolute form
    if (name.empty()) return "empty name";
    if (name.find('\0') != std::string_view::npos) return "a NUL byte in the name";
    if (name.size() > 253) return std::to_string(name.size()) + " bytes, more than 253";
    std::size_t start = 0;
    while (start <= name.size()) {
        std::size_t end = name.find('.', start);
        if (end == std::string_view::npos) end = name.size();
        const std::size_t len = end - start;
        if (len == 0) return "an empty label";
        if (len > 63) {
            return "label \"" + std::string(name.substr(start, 16)) + "...\" is " +
                   std::to_string(len) + " bytes, more than 63";
        }
        start = end + 1;
    }
    return std::nullopt;
}

Error failure(int status, std::string_view host, Family f) {
    const std::string where = quoted(host) + " (" + family_label(f) + "): ";
    const std::string why = std::string(" (c-ares: ") + ares_strerror(status) + ")";
    switch (status) {
        case ARES_ENOTFOUND:
            return Error(errc::host_not_found, "no such host " + std::string(host));
        case ARES_ENODATA:
            return Error(errc::no_address,
                         std::string(host) + " has no " + family_label(f) + " address");
        case ARES_ETIMEOUT:
            return Error(errc::dns_timeout, where + "no answer from the DNS servers" + why);
        case ARES_ESERVFAIL:
            return Error(errc::dns_failed, where + "the DNS server failed (SERVFAIL)" + why);
        case ARES_EREFUSED:
            return Error(errc::dns_failed, where + "the DNS server refused (REFUSED)" + why);
        case ARES_ECONNREFUSED:
            // c-ares tries the next server after a SERVFAIL or REFUSED, and says this when
            // none is left.
            return Error(
                errc::dns_failed,
                where + "no DNS server answered (each refused, failed or was unreachable)" + why);
        case ARES_EBADNAME:
            return Error(errc::dns_failed, where + "malformed name" + why);
        case ARES_EFORMERR:
        case ARES_EBADRESP:
            return Error(errc::dns_failed, where + "malformed DNS message" + why);
        default:
            return Error(errc::dns_failed, where + "DNS lookup failed" + why);
    }
}

// Lower is more telling: an answer about the name beats a failure, a failure beats silence,
// silence beats "no address" (the other family may have had one but timed out).
int rank(const Error& e) {
    if (e == errc::host_not_found) return 0;
    if (e == errc::dns_timeout) return 2;
    if (e == errc::no_address) return 3;
    return 1;
}

void init_library() {
    static std::once_flag once;
    std::call_once(once, [] { ares_library_init(ARES_LIB_INIT_ALL); });
}

}  // namespace

struct Resolver::Impl final : detail::Resource {
    struct Channel;

    // A socket c-ares asked to be watched. Freed by its close callback, which may come after
    // the channel is gone.
    struct Watch {
        uv_poll_t poll{};
        detail::LoopCore* core = nullptr;
        Channel* channel = nullptr;
        ares_socket_t fd = ARES_SOCKET_BAD;
    };

    // One c-ares channel with its handles. Replaced by configure(); a replaced channel stays
    // until no lookup waits for it. Freed by its timer's close callback.
    struct Channel {
        Impl* owner = nullptr;
        ares_channel ch = nullptr;
        uv_timer_t timer{};
        std::vector<Watch*> watches;
        std::size_t requests = 0;  // c-ares requests whose callback has not come
        std::size_t waited = 0;    // those a lookup still waits for
        bool retired = false;
        bool tidy_scheduled = false;

        void wait() {
            // Referenced only while a lookup waits: an abandoned request must not keep run()
            // going, and c-ares keeps its timer armed while any request runs.
            if (waited++ == 0) uv_ref(reinterpret_cast<uv_handle_t*>(&timer));
        }
        void stop_waiting() {
            if (--waited == 0) {
                uv_unref(reinterpret_cast<uv_handle_t*>(&timer));
                if (requests > 0 || retired) schedule_tidy();
            }
        }
        void schedule_tidy() {
            if (tidy_scheduled || owner->shut) return;
            tidy_scheduled = true;
            // On a later iteration: c-ares must not be cancelled or destroyed from inside its
            // own callbacks.
            owner->core->defer([this] { tidy(); });
        }
        // Drops the requests nobody waits for; a replaced channel with none left goes.
        void tidy() {
            tidy_scheduled = false;
            if (waited > 0) return;
            if (requests > 0) ares_cancel(ch);  // their callbacks find no lookup waiting
            if (retired) {
                std::erase(owner->retired, this);
                close();
                return;
            }
            update_timer();
        }

        void update_timer() {
            timeval tv{};
            if (ares_timeout(ch, nullptr, &tv) == nullptr) {
                uv_timer_stop(&timer);
                return;
            }
            const auto ms = static_cast<std::uint64_t>(tv.tv_sec) * 1000 +
                            static_cast<std::uint64_t>(tv.tv_usec + 999) / 1000;
            // At least 1 ms: libuv 1.44 runs a 0 ms timer started in a timer callback in the
            // same phase.
            uv_timer_start(
                &timer,
                [](uv_timer_t* t) {
                    auto* c = static_cast<Channel*>(t->data);
                    ares_process_fd(c->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
                    c->update_timer();
                },
                std::max<std::uint64_t>(ms, 1), 0);
        }

        static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
            auto* c = static_cast<Channel*>(data);
            auto it = std::find_if(c->watches.begin(), c->watches.end(),
                                   [fd](const Watch* w) { return w->fd == fd; });
            if (!readable && !writable) {
                if (it == c->watches.end()) return;
                Watch* w = *it;
                c->watches.erase(it);
                c->release(w);
                return;
            }
            Watch* w = nullptr;
            if (it == c->watches.end()) {
                w = new Watch{};
                w->core = c->owner->core;
                w->channel = c;
                w->fd = fd;
                if (uv_poll_init_socket(w->core->loop, &w->poll, fd) != 0) {
                    delete w;  // unwatched: the request ends by its timeout
                    return;
                }
                w->poll.data = w;
                uv_unref(reinterpret_cast<uv_handle_t*>(&w->poll));
                c->watches.push_back(w);
            } else {
                w = *it;
            }
            uv_poll_start(&w->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
                          [](uv_poll_t* h, int status, int events) {
                              auto* w = static_cast<Watch*>(h->data);
                              Channel* c = w->channel;
                              if (c == nullptr) return;
                              const ares_socket_t fd = w->fd;
                              // An error: let c-ares read and write, and find out itself.
                              const bool all = status < 0;
                              ares_process_fd(c->ch,
                                              all || (events & UV_READABLE) ? fd : ARES_SOCKET_BAD,
                                              all || (events & UV_WRITABLE) ? fd : ARES_SOCKET_BAD);
                              c->update_timer();
                          });
        }

        void release(Watch* w) {
            w->channel = nullptr;
            detail::close_handle(*w->core, reinterpret_cast<uv_handle_t*>(&w->poll),
                                 [](uv_handle_t* h) {
                                     auto* w = static_cast<Watch*>(h->data);
                                     detail::closed_handle(*w->core);
                                     delete w;
                                 });
        }

        // Destroys the c-ares channel (its pending callbacks run with ARES_EDESTRUCTION and
        // find nothing to do), then the handles; the close callback frees this.
        void close() {
            ares_destroy(ch);
            ch = nullptr;
            for (Watch* w : watches) release(w);
            watches.clear();
            detail::close_handle(*owner->core, reinterpret_cast<uv_handle_t*>(&timer),
                                 [](uv_handle_t* h) {
                                     auto* c = static_cast<Channel*>(h->data);
                                     detail::closed_handle(*c->owner->core);
                                     delete c;
                                 });
        }
    };

    // What a c-ares request reports to: its own allocation, because the lookup may be gone
    // (cancelled, timed out) long before c-ares calls back.
    struct Request {
        Channel* channel;
        Id id;
        Family family;
    };

    struct Slot {
        Family family = Family::none;
        Channel* channel = nullptr;  // while waiting for c-ares
        std::optional<Result<Addresses>> result;
        unsigned order = 0;  // when the result came in (1, 2); 0: not yet
        bool delivered = false;
    };

    struct Lookup : detail::Deadline {
        Impl* impl = nullptr;
        Id id = 0;
        std::string host;
        std::uint16_t port = 0;
        std::chrono::milliseconds timeout{0};
        FamilyFn each;
        ResolveFn done;
        std::array<Slot, 2> slots;  // the preferred family first
        std::size_t nslots = 0;
        unsigned results = 0;
        bool starting = true;        // inside lookup()/resolve(): results wait for a deferral
        bool flush_pending = false;  // a deferral will deliver what is in
        bool finished = false;       // out of the map: nothing more is delivered
    };

    detail::LoopCore* core = nullptr;
    ResolverConf conf;
    Channel* current = nullptr;
    std::vector<Channel*> retired;
    Error init_error;  // why `current` is null
    std::unordered_map<Id, std::shared_ptr<Lookup>> lookups;
    Id next_id = 1;
    bool shut = false;

    explicit Impl(detail::LoopCore& c) : core(&c) { core->add(this); }
    ~Impl() = default;

    static Result<Channel*> make_channel(Impl* owner, const ResolverConf& conf) {
        init_library();
        auto c = std::make_unique<Channel>();
        c->owner = owner;
        ares_options opts{};
        int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_LOOKUPS | ARES_OPT_SOCK_RCVBUF;
        // Every request to a server shares one UDP socket: a burst of answers to many lookups
        // in flight overflows the default buffer, and c-ares only notices a lost answer by
        // its retry timeout (seconds).
        opts.socket_receive_buffer_size = 1 << 20;
        opts.sock_state_cb = &Channel::on_sock_state;
        opts.sock_state_cb_data = c.get();
        std::string lookups = conf.hosts_file ? "fb" : "b";  // c-ares copies it
        opts.lookups = lookups.data();
        if (int rc = ares_init_options(&c->ch, &opts, mask); rc != ARES_SUCCESS)
            return Error(errc::dns_failed,
                         std::string("resolver: c-ares init: ") + ares_strerror(rc));
        if (!conf.servers.empty()) {
            std::vector<ares_addr_port_node> nodes(conf.servers.size());
            for (std::size_t i = 0; i < conf.servers.size(); ++i) {
                const Address& a = conf.servers[i];
                auto& n = nodes[i];
                n.next = i + 1 < nodes.size() ? &nodes[i + 1] : nullptr;
                const int port = a.port() == 0 ? 53 : a.port();
                n.udp_port = port;
                n.tcp_port = port;
                if (a.is_v4()) {
                    n.family = AF_INET;
                    std::memcpy(&n.addr.addr4,
                                &reinterpret_cast<const sockaddr_in*>(a.sockaddr())->sin_addr,
                                sizeof n.addr.addr4);
                } else {
                    n.family = AF_INET6;
                    std::memcpy(&n.addr.addr6,
                                &reinterpret_cast<const sockaddr_in6*>(a.sockaddr())->sin6_addr,
                                sizeof n.addr.addr6);
                }
            }
            if (int rc = ares_set_servers_ports(c->ch, nodes.data()); rc != ARES_SUCCESS) {
                ares_destroy(c->ch);
                return Error(
                    errc::dns_failed,
                    std::string("resolver: c-ares refused the servers: ") + ares_strerror(rc));
            }
        }
        uv_timer_init(owner->core->loop, &c->timer);
        c->timer.data = c.get();
        uv_unref(reinterpret_cast<uv_handle_t*>(&c->timer));
        return c.release();
    }

    Error apply(const ResolverConf& next) {
        for (std::size_t i = 0; i < next.servers.size(); ++i) {
            if (next.servers[i].empty())
                return Error(errc::invalid_address,
                             "resolver: server " + std::to_string(i) + " is an empty address");
        }
        auto made = make_channel(this, next);
        if (!made) return made.error();
        if (current) {
            current->retired = true;
            retired.push_back(current);
            if (current->waited == 0) current->schedule_tidy();
        }
        current = *made;
        init_error = Error{};
        conf = next;
        return {};
    }

    // ~Loop: no user callback runs; every handle closes while the loop is still whole.
    void shutdown_silently() override {
        shut = true;
        core->remove(this);
        for (auto& [id, l] : lookups) {
            core->disarm(*l);
            l->finished = true;
        }
        auto gone = std::move(lookups);
        gone.clear();
        if (current) current->close();
        current = nullptr;
        for (Channel* c : retired) c->close();
        retired.clear();
    }

    Id start(std::string_view host, std::uint16_t port, FamilyPolicy policy,
             std::chrono::milliseconds timeout, FamilyFn each, ResolveFn done) {
        const Id id = next_id++;
        auto lp = std::make_shared<Lookup>();
        Lookup& l = *lp;
        l.impl = this;
        l.id = id;
        l.host = std::string(host);
        l.port = port;
        l.timeout = timeout;
        l.each = std::move(each);
        l.done = std::move(done);
        l.expired = [](detail::Deadline& d) {
            auto& l = static_cast<Lookup&>(d);
            l.impl->expire(l.id);
        };
        switch (policy) {
            case FamilyPolicy::any_ipv6_first:
                l.slots[0].family = Family::ipv6;
                l.slots[1].family = Family::ipv4;
                l.nslots = 2;
                break;
            case FamilyPolicy::any_ipv4_first:
                l.slots[0].family = Family::ipv4;
                l.slots[1].family = Family::ipv6;
                l.nslots = 2;
                break;
            case FamilyPolicy::ipv4_only:
                l.slots[0].family = Family::ipv4;
                l.nslots = 1;
                break;
            case FamilyPolicy::ipv6_only:
                l.slots[0].family = Family::ipv6;
                l.nslots = 1;
                break;
        }
        if (shut) return id;  // the loop is going away: nothing will run
        lookups.emplace(id, lp);

        if (timeout.count() <= 0) {
            fail_all(l, Error(errc::invalid_config, quoted(host) + ": the timeout must be > 0 ms"));
        } else if (auto numeric = Address::ip(host, port)) {
            answer_numeric(l, *numeric);
        } else if (auto why = malformed(host)) {
            fail_all(l, Error(errc::dns_failed, quoted(host) + ": malformed name (" + *why + ")"));
        } else if (current == nullptr) {
            fail_all(l, init_error);
        } else if (!answer_from_hosts(l)) {
            for (std::size_t i = 0; i < l.nslots && !l.finished; ++i) query(l, i);
            current->update_timer();
            // + 1: the loop clock counts whole milliseconds, so `now` may be up to 1 ms behind
            // and the timeout must not pass early.
            if (!l.finished && l.results < l.nslots)
                core->arm(l,
                          core->fresh_now_ms() + 1 + static_cast<std::uint64_t>(timeout.count()));
        }
        l.starting = false;
        if (l.results > 0 && !l.finished) schedule_flush(l);
        return id;
    }

    // A name /etc/hosts has, for any family, is answered from the file alone, as the C
    // library's resolver does: "localhost" with only an IPv4 line must not send its AAAA
    // question to the network's DNS servers.
    bool answer_from_hosts(Lookup& l) {
        if (!conf.hosts_file) return false;
        Addresses found[2];
        bool any = false;
        for (std::size_t i = 0; i < l.nslots; ++i) {
            const int af = l.slots[i].family == Family::ipv4 ? AF_INET : AF_INET6;
            hostent* he = nullptr;
            if (ares_gethostbyname_file(current->ch, l.host.c_str(), af, &he) != ARES_SUCCESS ||
                he == nullptr)
                continue;
            for (char** p = he->h_addr_list; p != nullptr && *p != nullptr; ++p) {
                sockaddr_storage ss{};
                if (af == AF_INET) {
                    auto* sa = reinterpret_cast<sockaddr_in*>(&ss);
                    sa->sin_family = AF_INET;
                    std::memcpy(&sa->sin_addr, *p, sizeof sa->sin_addr);
                } else {
                    auto* sa = reinterpret_cast<sockaddr_in6*>(&ss);
                    sa->sin6_family = AF_INET6;
                    std::memcpy(&sa->sin6_addr, *p, sizeof sa->sin6_addr);
                }
                Address a =
                    Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss)).with_port(l.port);
                if (std::find(found[i].begin(), found[i].end(), a) == found[i].end())
                    found[i].push_back(a);
            }
            ares_free_hostent(he);
            any = any || !found[i].empty();
        }
        if (!any) return false;
        for (std::size_t i = 0; i < l.nslots; ++i) {
            if (!found[i].empty())
                settle(l, i, std::move(found[i]));
            else
                settle(
                    l, i,
                    Error(errc::no_address, l.host + " has no " + family_label(l.slots[i].family) +
                                                " address in the hosts file"));
        }
        return true;
    }

    void fail_all(Lookup& l, const Error& e) {
        for (std::size_t i = 0; i < l.nslots; ++i) settle(l, i, e);
    }

    void answer_numeric(Lookup& l, const Address& a) {
        for (std::size_t i = 0; i < l.nslots; ++i) {
            if (l.slots[i].family == a.family()) {
                l.slots[0].family = a.family();
                l.nslots = 1;
                settle(l, 0, Addresses{a});
                return;
            }
        }
        fail_all(l, Error(errc::no_address, l.host + " is an " + family_label(a.family()) +
                                                " address, which the policy excludes"));
    }

    void query(Lookup& l, std::size_t i) {
        Slot& s = l.slots[i];
        Channel* c = current;
        s.channel = c;
        ++c->requests;
        c->wait();
        ares_addrinfo_hints hints{};
        hints.ai_family = s.family == Family::ipv4 ? AF_INET : AF_INET6;
        // No RFC 6724 sort: it costs a socket per address, and the policy orders families.
        hints.ai_flags = ARES_AI_NOSORT;
        // May call back at once (/etc/hosts): the lookup is in the map and `starting` holds
        // the result for a deferral.
        ares_getaddrinfo(c->ch, l.host.c_str(), nullptr, &hints, &Impl::on_answer,
                         new Request{c, l.id, s.family});
    }

    static void on_answer(void* arg, int status, int /*timeouts*/, ares_addrinfo* res) {
        std::unique_ptr<Request> rq(static_cast<Request*>(arg));
        struct Free {
            ares_addrinfo* r;
            ~Free() {
                if (r) ares_freeaddrinfo(r);
            }
        } free_res{res};
        Channel* c = rq->channel;
        --c->requests;
        Impl* self = c->owner;
        if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED || self->shut) return;
        auto it = self->lookups.find(rq->id);
        if (it == self->lookups.end()) return;
        auto keep = it->second;
        Lookup& l = *keep;
        for (std::size_t i = 0; i < l.nslots; ++i) {
            Slot& s = l.slots[i];
            if (s.family != rq->family || s.channel != c) continue;
            if (status != ARES_SUCCESS) {
                self->settle(l, i, failure(status, l.host, s.family));
                return;
            }
            Addresses out;
            for (auto* n = res ? res->nodes : nullptr; n != nullptr; n = n->ai_next) {
                Address a = Address::from_sockaddr(n->ai_addr).with_port(l.port);
                if (a.family() == s.family && std::find(out.begin(), out.end(), a) == out.end())
                    out.push_back(a);
            }
            if (out.empty())
                self->settle(l, i, failure(ARES_ENODATA, l.host, s.family));
            else
                self->settle(l, i, std::move(out));
            return;
        }
    }

    void expire(Id id) {
        auto it = lookups.find(id);
        if (it == lookups.end()) return;
        auto keep = it->second;
        Lookup& l = *keep;
        for (std::size_t i = 0; i < l.nslots && !l.finished; ++i) {
            if (l.slots[i].result) continue;
            settle(l, i,
                   Error(errc::dns_timeout,
                         quoted(l.host) + " (" + family_label(l.slots[i].family) +
                             "): no answer within " + std::to_string(l.timeout.count()) + " ms"));
        }
    }

    // Slot i's outcome is in: delivered now, or by a deferral while lookup() runs.
    void settle(Lookup& l, std::size_t i, Result<Addresses> r) {
        Slot& s = l.slots[i];
        if (s.result || l.finished) return;
        if (s.channel) {
            Channel* c = std::exchange(s.channel, nullptr);
            c->stop_waiting();
        }
        s.result = std::move(r);
        s.order = ++l.results;
        if (l.results == l.nslots) core->disarm(l);
        if (l.starting) return;
        if (l.flush_pending) return;
        deliver(l);
    }

    void schedule_flush(Lookup& l) {
        l.flush_pending = true;
        core->defer([this, id = l.id] {
            auto it = lookups.find(id);
            if (it == lookups.end()) return;
            auto keep = it->second;
            keep->flush_pending = false;
            deliver(*keep);
        });
    }

    // Out of the map, every wait released: cancel() now says false.
    void finish(Lookup& l) {
        l.finished = true;
        core->disarm(l);
        for (std::size_t i = 0; i < l.nslots; ++i) {
            if (Channel* c = std::exchange(l.slots[i].channel, nullptr)) c->stop_waiting();
        }
        lookups.erase(l.id);
    }

    void deliver(Lookup& l) {
        auto keep = lookups.at(l.id);  // the callbacks may cancel it
        if (l.done) {
            if (l.results < l.nslots) return;
            finish(l);
            guarded([&] { l.done(combine(l)); });
            return;
        }
        for (unsigned n = 1; n <= l.results && !l.finished; ++n) {
            for (std::size_t i = 0; i < l.nslots; ++i) {
                Slot& s = l.slots[i];
                if (s.order != n || s.delivered) continue;
                s.delivered = true;
                if (std::all_of(l.slots.begin(), l.slots.begin() + static_cast<long>(l.nslots),
                                [](const Slot& x) { return x.delivered; }))
                    finish(l);
                guarded([&] { l.each(s.family, std::move(*s.result)); });
                break;
            }
        }
    }

    template <class F>
    void guarded(F&& f) {
        try {
            f();
        } catch (...) {
            core->report_exception(std::current_exception());
        }
    }

    // resolve()'s answer: the families interleaved, the preferred first (RFC 8305 with a
    // first-family count of one), or the most telling error when none has an address.
    static Result<Addresses> combine(Lookup& l) {
        std::array<Addresses, 2> got;
        std::optional<Error> best;
        bool all_no_address = true;
        for (std::size_t i = 0; i < l.nslots; ++i) {
            auto& r = *l.slots[i].result;
            if (r) {
                got[i] = std::move(r).value();
                continue;
            }
            Error e = r.error();
            if (!(e == errc::no_address)) all_no_address = false;
            if (!best || rank(e) < rank(*best)) best = std::move(e);
        }
        if (!best) best = Error(errc::no_address, l.host + " has no address");
        if (got[0].empty() && got[1].empty()) {
            if (all_no_address && l.nslots == 2) {
                return Error(errc::no_address, l.host + " has no " +
                                                   family_label(l.slots[0].family) + " or " +
                                                   family_label(l.slots[1].family) + " address");
            }
            return *best;
        }
        Addresses out;
        out.reserve(got[0].size() + got[1].size());
        for (std::size_t k = 0; k < std::max(got[0].size(), got[1].size()); ++k) {
            if (k < got[0].size()) out.push_back(got[0][k]);
            if (k < got[1].size()) out.push_back(got[1][k]);
        }
        return out;
    }
};

Resolver::Resolver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Resolver::~Resolver() = default;

Resolver& Resolver::of(Loop& loop) {
    auto& core = loop.core();
    if (!core.resolver) {
        auto impl = std::make_unique<Impl>(core);
        if (auto made = Impl::make_channel(impl.get(), impl->conf))
            impl->current = *made;
        else
            impl->init_error = made.error();
        core.resolver =
            std::shared_ptr<Resolver>(new Resolver(std::move(impl)), [](Resolver* r) { delete r; });
    }
    return *static_cast<Resolver*>(core.resolver.get());
}

Error Resolver::configure(Loop& loop, const ResolverConf& conf) {
    return of(loop).impl_->apply(conf);
}

Resolver::Id Resolver::lookup(std::string_view host, std::uint16_t port, FamilyPolicy policy,
                              std::chrono::milliseconds timeout, FamilyFn each) {
    return impl_->start(host, port, policy, timeout, std::move(each), nullptr);
}

Resolver::Id Resolver::resolve(std::string_view host, std::uint16_t port, FamilyPolicy policy,
                               std::chrono::milliseconds timeout, ResolveFn done) {
    return impl_->start(host, port, policy, timeout, nullptr, std::move(done));
}

bool Resolver::cancel(Id id) {
    auto it = impl_->lookups.find(id);
    if (it == impl_->lookups.end()) return false;
    auto keep = it->second;
    impl_->finish(*keep);
    return true;
}

}  // namespace pipeworks
