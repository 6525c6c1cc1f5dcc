#include "relay_config.hpp"

#include <charconv>
#include <cmath>
#include <limits>
#include <vector>

namespace pipeworks::relay {

namespace {

Error bad(std::string message) {
    return Error(errc::invalid_config, std::move(message));
}

}  // namespace

const char* to_string(Scheme s) noexcept {
    return s == Scheme::udp ? "udp" : "tcp";
}

Result<Endpoint> parse_endpoint(std::string_view text) {
    const auto sep = text.find("://");
    if (sep == std::string_view::npos)
        return Error(errc::invalid_address,
                     "\"" + std::string(text) + "\": expected tcp://HOST:PORT or udp://HOST:PORT");
    const std::string_view scheme = text.substr(0, sep);
    const std::string_view rest = text.substr(sep + 3);
    Endpoint ep;
    ep.text = std::string(text);
    if (scheme == "tcp") {
        ep.scheme = Scheme::tcp;
    } else if (scheme == "udp") {
        ep.scheme = Scheme::udp;
    } else if (scheme == "tls") {
        return Error(errc::not_supported_yet,
                     "\"" + ep.text + "\": tls:// is not supported yet (it arrives with TLS)");
    } else {
        return Error(errc::invalid_address, "\"" + ep.text + "\": unknown scheme \"" +
                                                std::string(scheme) + "\" (use tcp:// or udp://)");
    }
    auto addr = resolve_blocking(rest);
    if (!addr) return Error(errc::invalid_address, "\"" + ep.text + "\": " + addr.error().message);
    ep.address = *addr;
    return ep;
}

Error RelayConfig::validate() const {
    const bool tcp_listen = listen.scheme == Scheme::tcp;
    const bool tcp_target = target.scheme == Scheme::tcp;
    if (tcp_listen != tcp_target && framing == Framing::raw)
        return bad(std::string("relaying ") + to_string(listen.scheme) + " to " +
                   to_string(target.scheme) +
                   " needs --framing length on the TCP side (raw TCP has no message boundaries "
                   "to turn into datagrams)");
    if (!tcp_listen && !tcp_target && framing != Framing::raw)
        return bad("--framing length applies to TCP sides; udp to udp has none");
    if (target.address.port() == 0) return bad("the target \"" + target.text + "\" needs a port");
    if (target.address.is_any())
        return bad("the target \"" + target.text + "\" is an any-address; give a host");
    if (connect_timeout.count() <= 0) return bad("--connect-timeout: must be > 0");
    if (idle_timeout && idle_timeout->count() == 0 && (!tcp_listen || !tcp_target))
        return bad("--idle-timeout: must be > 0 when a side is UDP (a UDP flow has no other end)");
    if (idle_timeout && idle_timeout->count() < 0) return bad("--idle-timeout: must be >= 0");
    if (frame_timeout && framing == Framing::raw)
        return bad("--frame-timeout applies to --framing length (raw TCP has no messages)");
    if (frame_timeout && frame_timeout->count() < 0) return bad("--frame-timeout: must be >= 0");
    return {};
}

Result<std::chrono::milliseconds> parse_seconds(std::string_view option, std::string_view text) {
    double v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(v) || v < 0 ||
        v > 1e9)
        return bad(std::string(option) + ": expected seconds (e.g. 5 or 0.5), got \"" +
                   std::string(text) + "\"");
    const auto ms = static_cast<std::int64_t>(std::llround(v * 1000));
    // A positive value that rounds to 0 ms must not turn into "never".
    return std::chrono::milliseconds(v > 0 && ms == 0 ? 1 : ms);
}

Result<CommandLine> parse_command_line(std::span<const char* const> args) {
    CommandLine cl;
    std::vector<std::string_view> positional;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string_view a = args[i];
        if (a == "--help" || a == "-h") {
            cl.help = true;
            return cl;
        }
    }
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string_view a = args[i];
        // "--opt=value" and "--opt value" both work.
        std::string_view inline_value;
        bool has_inline = false;
        if (a.starts_with("--")) {
            if (auto eq = a.find('='); eq != std::string_view::npos) {
                inline_value = a.substr(eq + 1);
                a = a.substr(0, eq);
                has_inline = true;
            }
        }
        auto value = [&]() -> Result<std::string_view> {
            if (has_inline) return inline_value;
            if (i + 1 >= args.size()) return bad(std::string(a) + ": needs a value");
            return std::string_view(args[++i]);
        };
        auto flag = [&](bool& out) -> Error {
            if (has_inline) return bad(std::string(a) + ": takes no value");
            out = true;
            return {};
        };
        Error e;
        if (a == "--stats") {
            e = flag(cl.stats);
        } else if (a == "--quiet" || a == "-q") {
            e = flag(cl.quiet);
        } else if (a == "--framing") {
            auto v = value();
            if (!v) return v.error();
            if (*v == "raw")
                cl.relay.framing = Framing::raw;
            else if (*v == "length")
                cl.relay.framing = Framing::length;
            else
                return bad("--framing: expected raw or length, got \"" + std::string(*v) + "\"");
        } else if (a == "--max-conns") {
            auto v = value();
            if (!v) return v.error();
            std::size_t n = 0;
            auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
            if (ec != std::errc{} || end != v->data() + v->size() || n == 0)
                return bad("--max-conns: expected a positive integer, got \"" + std::string(*v) +
                           "\"");
            cl.relay.max_conns = n;
        } else if (a == "--idle-timeout" || a == "--frame-timeout" || a == "--connect-timeout" ||
                   a == "--grace") {
            auto v = value();
            if (!v) return v.error();
            auto ms = parse_seconds(a, *v);
            if (!ms) return ms.error();
            if (a == "--idle-timeout")
                cl.relay.idle_timeout = *ms;
            else if (a == "--frame-timeout")
                cl.relay.frame_timeout = *ms;
            else if (a == "--connect-timeout")
                cl.relay.connect_timeout = *ms;
            else
                cl.grace = *ms;
        } else if (a.starts_with("-") && a.size() > 1) {
            return bad("unknown option \"" + std::string(args[i]) + "\"");
        } else {
            positional.push_back(a);
        }
        if (e) return e;
    }
    if (positional.size() != 2)
        return bad("expected LISTEN and TARGET, got " + std::to_string(positional.size()) +
                   " argument(s)");
    auto listen = parse_endpoint(positional[0]);
    if (!listen) return Error(listen.error().code, "LISTEN " + listen.error().message);
    auto target = parse_endpoint(positional[1]);
    if (!target) return Error(target.error().code, "TARGET " + target.error().message);
    cl.relay.listen = std::move(*listen);
    cl.relay.target = std::move(*target);
    if (auto e = cl.relay.validate()) return e;
    return cl;
}

}  // namespace pipeworks::relay
