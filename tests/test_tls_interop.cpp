// TLS pipes against peers that are not pipeworks, run as child processes on loopback with
// ports chosen by the OS: openssl s_server and s_client, and Python's ssl module as client and
// server (tests/python/tls_peer.py). Round trips with verification on both sides, TLS 1.3 and
// 1.2, ALPN, client certificates, clean ends by close_notify, and a peer that writes garbage
// after its handshake.
#include "child_process.hpp"
#include "tls_pipe_support.hpp"

#include <pipeworks/pipeworks.hpp>

#include <nlohmann/json.hpp>

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace pipeworks;
using namespace pw_test;
using namespace std::chrono_literals;

namespace {

// A fresh directory, removed with everything in it when it goes away.
struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::string templ = (std::filesystem::temp_directory_path() / "pw-tls-XXXXXX").string();
        REQUIRE(::mkdtemp(templ.data()) != nullptr);
        path = templ;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
};

// The test PKI as files, for peers that read certificates from disk.
struct PemFiles {
    TempDir dir;  // first: a constructor that fails half-way still removes it
    std::string ca, cert, key, client_cert, client_key;

    PemFiles()
        : ca(write("ca.pem", pem().ca)),
          cert(write("cert.pem", pem().cert)),
          key(write("key.pem", pem().key)),
          client_cert(write("client_cert.pem", pem().client_cert)),
          client_key(write("client_key.pem", pem().client_key)) {}

    std::string write(const char* name, const std::string& text) const {
        const std::filesystem::path p = dir.path / name;
        std::ofstream(p) << text;
        REQUIRE(std::filesystem::file_size(p) == text.size());
        return p.string();
    }
};

std::string host(Family f) {
    return f == Family::ipv4 ? "127.0.0.1" : "::1";
}

// The host as HOST:PORT spells it: IPv6 in brackets.
std::string bracketed(Family f) {
    return f == Family::ipv4 ? host(f) : "[" + host(f) + "]";
}

std::string host_port(Family f, std::uint16_t port) {
    return bracketed(f) + ":" + std::to_string(port);
}

std::vector<std::string> openssl(std::vector<std::string> args) {
    args.insert(args.begin(), {"/usr/bin/env", "openssl"});
    return args;
}

// -B: the imported helper leaves no __pycache__ in the source tree.
std::vector<std::string> python_peer(std::vector<std::string> args) {
    args.insert(args.begin(), {"/usr/bin/env", "python3", "-B",
                               PIPEWORKS_SOURCE_DIR "/tests/python/tls_peer.py"});
    return args;
}

// s_server's command line: the test certificate on loopback, a port chosen by the OS, for
// `connections` connections, each line answered reversed (-rev: a reply only a working
// session gives); `options` come after.
std::vector<std::string> s_server(Family f, const PemFiles& files, int connections,
                                  const std::vector<std::string>& options) {
    std::vector<std::string> args{
        "s_server", "-accept",  host_port(f, 0), "-naccept", std::to_string(connections),
        "-cert",    files.cert, "-key",          files.key,  "-rev"};
    args.insert(args.end(), options.begin(), options.end());
    return openssl(std::move(args));
}

// openssl s_server's "ACCEPT HOST:PORT" line: where it listens, the port chosen by the OS.
Address s_server_address(Child& server, Loop* loop) {
    const auto line_end = [&] {
        const auto at = server.out_text.find("ACCEPT ");
        return at == std::string::npos ? at : server.out_text.find('\n', at);
    };
    REQUIRE_MESSAGE(
        server.wait_for([&] { return line_end() != std::string::npos; }, loop),
        "no ACCEPT line; stdout: " << server.out_text << "; stderr: " << server.err_text);
    const auto start = server.out_text.find("ACCEPT ") + std::string_view("ACCEPT ").size();
    const std::string text = server.out_text.substr(start, line_end() - start);
    CAPTURE(text);
    auto at = Address::parse(text);
    REQUIRE(at.ok());
    REQUIRE(at->port() != 0);
    return *at;
}

// The JSON object a Python peer prints last, once it has exited 0.
nlohmann::json python_report(Child& peer, Loop& loop) {
    const int status = peer.wait_exit(&loop);
    CAPTURE(peer.out_text);
    CAPTURE(peer.err_text);
    REQUIRE(status == 0);
    std::string text = peer.out_text;
    while (!text.empty() && text.back() == '\n') text.pop_back();
    const auto nl = text.rfind('\n');
    return nlohmann::json::parse(nl == std::string::npos ? text : text.substr(nl + 1));
}

// s_client's command line against `server`: it trusts the test CA, checks the address the
// certificate names and fails on any verification error; `options` come after.
std::vector<std::string> s_client(const EchoServer& server, const PemFiles& files,
                                  const std::vector<std::string>& options) {
    const Address at = server.pipe->local_address();
    const std::string to = host_port(at.family(), at.port()), ip = host(at.family());
    std::vector<std::string> args{
        "s_client", "-connect", to, "-CAfile", files.ca, "-verify_return_error", "-verify_ip", ip};
    args.insert(args.end(), options.begin(), options.end());
    return openssl(std::move(args));
}

// Says `line` through an s_client, waits for the echo, then ends its input: s_client sends
// close_notify and exits 0.
void echo_line(Child& client, const std::string& line, Loop& loop) {
    REQUIRE(client.write_stdin(line));
    CHECK(client.wait_for([&] { return client.out_text.find(line) != std::string::npos; }, &loop));
    client.close_stdin();
    CHECK(client.wait_exit(&loop) == 0);
}

// An s_client that refused the handshake: exit 1 with `reason`, and the server heard of it.
void expect_refused(Child& client, EchoServer& server, Loop& loop, const char* reason) {
    CHECK(client.wait_exit(&loop) == 1);
    CAPTURE(client.err_text);
    CHECK(client.err_text.find(reason) != std::string::npos);
    run_until(
        loop, [&] { return !server.errors.empty(); }, "the server reports the refusal");
    REQUIRE(!server.errors.empty());
    CAPTURE(server.errors[0].message);
    CHECK(server.errors[0] == errc::tls_failed);
}

// The one pipe `server` served ended cleanly: the client's close_notify, then the server's.
void expect_clean_end(EchoServer& server, Loop& loop) {
    run_until(
        loop, [&] { return server.ends.size() == 1; }, "the served pipe ends");
    REQUIRE(server.ends.size() == 1);
    CAPTURE(server.ends[0].error.message);
    CHECK(server.ends[0].reason == EndReason::peer_close);
    CHECK(!server.ends[0].error);
    CHECK(server.errors.empty());
}

}  // namespace

TEST_CASE("TLS interop: a pipeworks client and openssl s_server, verified, v4 and v6") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        PemFiles files;
        Child server(s_server(f, files, 1, {}), Child::Stdin::pipe);
        const Address at = s_server_address(server, &loop);
        NetConf c = client_conf();
        c.tls.ca_pem.clear();
        c.tls.ca_file = files.ca;
        Outcome o = talk(loop, at, c, "hello from pipeworks\n", "the reversed line");
        REQUIRE(o.end->count == 0);
        CHECK(o.got->data == "skrowepip morf olleh\n");
        const TlsInfo i = o.pipe->tls_info();
        CHECK(i.established);
        CHECK(i.verified);
        CHECK(i.version == "TLSv1.3");
        CHECK(i.peer_subject.find("localhost") != std::string::npos);
        CHECK(i.alpn.empty());

        o.pipe->close();
        CHECK(server.wait_exit(&loop) == 0);
        CAPTURE(server.out_text);
        CAPTURE(server.err_text);
        CHECK(server.err_text.find("CONNECTION ESTABLISHED") != std::string::npos);
        CHECK(server.out_text.find("1 server accepts that finished") != std::string::npos);
    }
}

TEST_CASE("TLS interop: ALPN against openssl s_server: its first choice; none in common fails") {
    Loop loop;
    PemFiles files;
    Child server(s_server(Family::ipv4, files, 2, {"-alpn", "pw/1,http/1.1"}), Child::Stdin::pipe);
    const Address at = s_server_address(server, &loop);
    NetConf c = client_conf();
    c.tls.alpn = {"http/1.1", "pw/1"};
    Outcome o = talk(loop, at, c, "abc\n", "the reversed line");
    REQUIRE(o.end->count == 0);
    CHECK(o.got->data == "cba\n");
    CHECK(o.pipe->tls_info().alpn == "pw/1");
    o.pipe->close();

    // No protocol in common: s_server refuses with the alert, and the client says so.
    c.tls.alpn = {"h2"};
    Outcome none = talk(loop, at, c, "xyz\n", "the refusal");
    REQUIRE(none.end->count == 1);
    CAPTURE(none.end->info.error.message);
    CHECK(none.end->info.error == errc::tls_failed);
    CHECK(mentions(none.end->info.error, "no application protocol"));
    CHECK(none.got->data.empty());
    CHECK(server.wait_exit(&loop) == 0);
    // s_server writes this summary out when it exits.
    CAPTURE(server.out_text);
    CHECK(server.out_text.find("ALPN protocols selected: pw/1") != std::string::npos);
}

TEST_CASE("TLS interop: openssl s_client verifies a pipeworks echo server, v4 and v6") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        PemFiles files;
        auto server = echo_server(loop, f, server_conf());
        Child client(s_client(*server, files, {"-brief"}), Child::Stdin::pipe);
        REQUIRE(client.wait_for([&] { return server->accepted == 1; }, &loop));
        echo_line(client, "hello from s_client\n", loop);
        CAPTURE(client.out_text);
        CAPTURE(client.err_text);
        CHECK(client.err_text.find("Verification: OK") != std::string::npos);
        CHECK(client.err_text.find("Protocol version: TLSv1.3") != std::string::npos);
        expect_clean_end(*server, loop);
    }
}

TEST_CASE("TLS interop: openssl s_client and ALPN; no common protocol is refused") {
    Loop loop;
    PemFiles files;
    NetConf s = server_conf();
    s.tls.alpn = {"pw/1"};
    auto server = echo_server(loop, Family::ipv4, s);
    PipePtr seen;
    server->pipe->on_accept([&](Pipe&, const PipePtr& p) { seen = p; });
    {
        Child client(s_client(*server, files, {"-alpn", "h2,pw/1"}), Child::Stdin::pipe);
        REQUIRE(client.wait_for([&] { return seen != nullptr; }, &loop));
        echo_line(client, "alpn line\n", loop);
        CAPTURE(client.out_text);
        CHECK(client.out_text.find("ALPN protocol: pw/1") != std::string::npos);
        CHECK(seen->tls_info().alpn == "pw/1");
    }
    {
        Child client(s_client(*server, files, {"-alpn", "h2"}), Child::Stdin::pipe);
        expect_refused(client, *server, loop, "no application protocol");
        CHECK(server->accepted == 1);
    }
}

TEST_CASE("TLS interop: openssl s_client refuses a certificate from an unknown CA") {
    Loop loop;
    PemFiles files;
    auto server = echo_server(loop, Family::ipv4, server_conf(pem().unknown_ca));
    Child client(s_client(*server, files, {"-brief"}), Child::Stdin::pipe);
    expect_refused(client, *server, loop, "unable to get local issuer certificate");
    CHECK(server->accepted == 0);
}

TEST_CASE("TLS interop: TLS 1.2 with openssl s_server and s_client; a 1.3-only server refuses") {
    Loop loop;
    PemFiles files;
    {
        Child server(s_server(Family::ipv4, files, 1, {"-tls1_2"}), Child::Stdin::pipe);
        Outcome o = talk(loop, s_server_address(server, &loop), client_conf(), "tls12\n",
                         "the reversed line");
        REQUIRE(o.end->count == 0);
        CHECK(o.got->data == "21slt\n");
        CHECK(o.pipe->tls_info().version == "TLSv1.2");
        CHECK(o.pipe->tls_info().verified);
        o.pipe->close();
        CHECK(server.wait_exit(&loop) == 0);
    }
    {
        auto server = echo_server(loop, Family::ipv4, server_conf());
        Child client(s_client(*server, files, {"-tls1_2", "-brief"}), Child::Stdin::pipe);
        REQUIRE(client.wait_for([&] { return server->accepted == 1; }, &loop));
        echo_line(client, "over TLS 1.2\n", loop);
        CAPTURE(client.err_text);
        CHECK(client.err_text.find("Protocol version: TLSv1.2") != std::string::npos);
        expect_clean_end(*server, loop);
    }
    {
        NetConf s = server_conf();
        s.tls.min_version = 0x0304;
        auto server = echo_server(loop, Family::ipv4, s);
        Child client(s_client(*server, files, {"-tls1_2", "-brief"}), Child::Stdin::pipe);
        expect_refused(client, *server, loop, "protocol version");
        CHECK(server->accepted == 0);
    }
}

TEST_CASE("TLS interop: client certificates with openssl s_server and s_client") {
    Loop loop;
    PemFiles files;
    {
        // -Verify: s_server requires a client certificate that its CA signed.
        Child server(s_server(Family::ipv4, files, 2, {"-Verify", "1", "-CAfile", files.ca}),
                     Child::Stdin::pipe);
        const Address at = s_server_address(server, &loop);
        NetConf c = client_conf();
        c.tls.cert_file = files.client_cert;
        c.tls.key_file = files.client_key;
        Outcome o = talk(loop, at, c, "with a cert\n", "the reversed line");
        REQUIRE(o.end->count == 0);
        CHECK(o.got->data == "trec a htiw\n");
        o.pipe->close();

        Outcome none = talk(loop, at, client_conf(), "without\n", "the refusal");
        REQUIRE(none.end->count == 1);
        CAPTURE(none.end->info.error.message);
        CHECK(none.end->info.error == errc::tls_failed);
        CHECK(mentions(none.end->info.error, "certificate required"));
        CHECK(server.wait_exit(&loop) == 0);
        CAPTURE(server.err_text);
        CHECK(server.err_text.find("CN = test client") != std::string::npos);
    }
    {
        NetConf s = server_conf();
        s.tls.require_client_cert = true;
        s.tls.ca_pem = pem().ca;
        auto server = echo_server(loop, Family::ipv4, s);
        PipePtr seen;
        server->pipe->on_accept([&](Pipe&, const PipePtr& p) { seen = p; });
        Child client(s_client(*server, files,
                              {"-cert", files.client_cert, "-key", files.client_key, "-brief"}),
                     Child::Stdin::pipe);
        REQUIRE(client.wait_for([&] { return seen != nullptr; }, &loop));
        echo_line(client, "from a known client\n", loop);
        CHECK(seen->tls_info().verified);
        CHECK(seen->tls_info().peer_subject.find("test client") != std::string::npos);
    }
}

TEST_CASE("TLS interop: a Python ssl client against a pipeworks echo server, v4 and v6") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        PemFiles files;
        NetConf s = server_conf();
        s.tls.alpn = {"pw/1"};
        auto server = echo_server(loop, f, s);
        const std::string port = std::to_string(server->pipe->local_address().port());
        Child client(
            python_peer({"client", host(f), port, files.ca, "hello from Python", "h2,pw/1"}));
        const nlohmann::json r = python_report(client, loop);
        CHECK(r["echo"] == "hello from Python");
        CHECK(r["version"] == "TLSv1.3");
        CHECK(r["alpn"] == "pw/1");
        CHECK(r["clean_close"] == true);
        expect_clean_end(*server, loop);
    }
}

TEST_CASE("TLS interop: a pipeworks client against a Python ssl server, v4 and v6") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        PemFiles files;
        Child server(python_peer({"server", host(f), files.cert, files.key, "pw/1"}));
        const Address at = listening_address(server, bracketed(f), &loop);
        NetConf c = client_conf();
        c.tls.alpn = {"pw/1", "http/1.1"};
        const std::string msg = payload(64 * 1024, 11);
        Outcome o = talk(loop, at, c, msg, "the echo");
        REQUIRE(o.end->count == 0);
        CHECK(o.got->data == msg);
        const TlsInfo i = o.pipe->tls_info();
        CHECK(i.verified);
        CHECK(i.version == "TLSv1.3");
        CHECK(i.alpn == "pw/1");
        // Python counts the end as clean only for a close_notify.
        o.pipe->close();
        const nlohmann::json r = python_report(server, loop);
        CHECK(r["served"] == msg.size());
        CHECK(r["clean_close"] == true);
        CHECK(r["alpn"] == "pw/1");
    }
}

TEST_CASE("TLS interop: resumption with openssl s_server and with a Python client") {
    Loop loop;
    PemFiles files;
    {
        Child server(s_server(Family::ipv4, files, 2, {}), Child::Stdin::pipe);
        const Address at = s_server_address(server, &loop);
        for (const bool again : {false, true}) {
            CAPTURE(again);
            Outcome o = talk(loop, at, client_conf(), "resume?\n", "the reversed line");
            REQUIRE(o.end->count == 0);
            CHECK(o.got->data == "?emuser\n");
            CHECK(o.pipe->tls_info().resumed == again);
            CHECK(o.pipe->tls_info().verified);
            o.pipe->close();
            run_until(
                loop, [&] { return o.end->count == 1; }, "closed");
        }
        CHECK(server.wait_exit(&loop) == 0);
        CAPTURE(server.out_text);
        CHECK(server.out_text.find("2 server accepts that finished") != std::string::npos);
    }
    {
        auto server = echo_server(loop, Family::ipv4, server_conf());
        const std::string port = std::to_string(server->pipe->local_address().port());
        Child client(python_peer({"client", "127.0.0.1", port, files.ca, "twice", "", "--resume"}));
        const nlohmann::json r = python_report(client, loop);
        REQUIRE(r["runs"].size() == 2);
        CHECK(r["runs"][0]["resumed"] == false);
        CHECK(r["runs"][1]["resumed"] == true);
        CHECK(r["runs"][1]["echo"] == "twice");
        run_until(
            loop, [&] { return server->ends.size() == 2; }, "both served pipes end");
        CHECK(server->accepted == 2);
    }
}

TEST_CASE("TLS interop: garbage after the handshake ends that pipe with tls_failed only") {
    for (const bool at_once : {false, true}) {
        CAPTURE(at_once);
        Loop loop;
        PemFiles files;
        auto server = echo_server(loop, Family::ipv4, server_conf());
        const std::string port = std::to_string(server->pipe->local_address().port());
        std::vector<std::string> args{"garbage", "127.0.0.1", port, files.ca};
        if (at_once) args.emplace_back("--at-once");
        Child rude(python_peer(args));
        const nlohmann::json r = python_report(rude, loop);
        CAPTURE(r.dump());
        run_until(
            loop, [&] { return server->ends.size() + server->errors.size() == 1; },
            "the server sees the garbage");
        REQUIRE(server->ends.size() + server->errors.size() == 1);
        if (!at_once) {
            // The pipe was handed over (it echoed a line): it is the pipe that ends.
            CHECK(r["echo"] == "first a good line\n");
            REQUIRE(server->ends.size() == 1);
            CAPTURE(server->ends[0].error.message);
            CHECK(server->ends[0].reason == EndReason::error);
            CHECK(server->ends[0].error == errc::tls_failed);
        } else {
            // Garbage right behind the client's Finished may come before the hand-over: then
            // the server reports it; either way as a TLS failure.
            const Error e = server->ends.empty() ? server->errors[0] : server->ends[0].error;
            CAPTURE(e.message);
            CHECK(e == errc::tls_failed);
        }
        CHECK(r["after_garbage"] == 0);
        CHECK(std::string(r["ended"]).starts_with("alert"));

        // The server goes on serving.
        Child good(python_peer({"client", "127.0.0.1", port, files.ca, "still served"}));
        const nlohmann::json g = python_report(good, loop);
        CHECK(g["echo"] == "still served");
        CHECK(g["clean_close"] == true);
    }
}

TEST_CASE("TLS interop: a Python server that writes garbage ends the client with tls_failed") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        PemFiles files;
        Child server(python_peer({"server", host(f), files.cert, files.key, "", "--garbage"}));
        const Address at = listening_address(server, bracketed(f), &loop);
        Outcome o = talk(loop, at, client_conf(), "before the garbage", "the echo");
        run_until(
            loop, [&] { return o.end->count == 1; }, "the client ends");
        REQUIRE(o.end->count == 1);
        CAPTURE(o.end->info.error.message);
        CHECK(o.got->data == "before the garbage");
        CHECK(o.end->info.reason == EndReason::error);
        CHECK(o.end->info.error == errc::tls_failed);
        const nlohmann::json r = python_report(server, loop);
        CAPTURE(r.dump());
        CHECK(r["served"] == 18);
        CHECK(r["after_garbage"] == 0);
        CHECK(std::string(r["ended"]).starts_with("alert"));
    }
}
