"""cmake --install: the installed tree works on its own.

Installs the build into a temporary prefix; the installed clued reports its version and
schema, migrates a fresh database with its built-in migrations (run from a folder with no
migrations/ in it) and serves; a small C program built against the installed tree with
`pkg-config --cflags --libs clue` alone (shared libclue, and again static) calls it: Health,
Health for a service it does not know (NOT_FOUND, whose google.rpc.Status details it decodes
with the installed google/rpc headers), then AdminService/ListUnits with the bootstrap
admin's token. The program has a grpc_status_name() of its own, which must not take the
place of libclue's wire helper of that name; and the installed libraries define no global
names but libclue's (clue_*, clue__* inside the static one) and the API's protobuf-c code.
"""

import glob
import hashlib
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import world  # noqa: E402

PROGRAM = r"""
#include <stdio.h>
#include <string.h>

#include <clue/client.h>
#include "clue/v1/admin.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

/* A name of the program's own that libclue's wire helpers once had: libclue must not call it. */
const char *grpc_status_name(int code);
const char *grpc_status_name(int code) {
  (void)code;
  return "the program's own grpc_status_name";
}

/* The ResourceInfo among the details of a failed call, through the installed headers. */
static int print_resource_info(const clue_status_t *st) {
  Google__Rpc__Status *s = google__rpc__status__unpack(NULL, st->details_len, st->details);
  int found = 0;

  if (s == NULL)
    return 0;
  for (size_t i = 0; i < s->n_details; i++) {
    Google__Rpc__ResourceInfo *ri;
    if (strcmp(s->details[i]->type_url, "type.googleapis.com/google.rpc.ResourceInfo") != 0)
      continue;
    ri = google__rpc__resource_info__unpack(NULL, s->details[i]->value.len, s->details[i]->value.data);
    if (ri != NULL) {
      printf("detail ResourceInfo %s %s\n", ri->resource_type, ri->resource_name);
      google__rpc__resource_info__free_unpacked(ri, NULL);
      found = 1;
    }
  }
  google__rpc__status__free_unpacked(s, NULL);
  return found;
}

int main(int argc, char **argv) {
  clue_conn_t *c;
  clue_status_t st = CLUE_STATUS_INIT;
  ProtobufCMessage *resp = NULL;
  Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Clue__V1__ListUnitsRequest ureq = CLUE__V1__LIST_UNITS_REQUEST__INIT;
  int rc;

  if (argc != 3 || clue_conn_new(argv[1], &c) != 0)
    return 2;
  rc = clue_call(c, "/grpc.health.v1.Health/Check", &hreq.base,
                 &grpc__health__v1__health_check_response__descriptor, &resp, &st);
  if (rc != 0) {
    fprintf(stderr, "Health/Check: %d %s\n", rc, st.message ? st.message : "");
    return 1;
  }
  printf("health %d\n", (int)((Grpc__Health__V1__HealthCheckResponse *)resp)->status);
  protobuf_c_message_free_unpacked(resp, NULL);
  hreq.service = "no.such.Service";
  rc = clue_call(c, "/grpc.health.v1.Health/Check", &hreq.base,
                 &grpc__health__v1__health_check_response__descriptor, &resp, &st);
  printf("unknown service %s\n", clue_status_name(rc));
  if (rc != CLUE_STATUS_NOT_FOUND || !print_resource_info(&st))
    return 1;
  if (clue_conn_set_token(c, argv[2]) != 0)
    return 1;
  rc = clue_call_method(c, &clue__v1__admin_service__descriptor, "ListUnits", &ureq.base, &resp, &st);
  if (rc != 0) {
    fprintf(stderr, "ListUnits: %s %s\n", clue_status_name(st.code), st.message ? st.message : "");
    return 1;
  }
  for (size_t i = 0; i < ((Clue__V1__ListUnitsResponse *)resp)->n_units; i++)
    printf("unit %s\n", ((Clue__V1__ListUnitsResponse *)resp)->units[i]->code);
  protobuf_c_message_free_unpacked(resp, NULL);
  clue_status_clear(&st);
  clue_conn_free(c);
  return 0;
}
"""

# TLS_PROGRAM TARGET CA [CERT KEY]: connects first, then calls; prints each step's status.
TLS_PROGRAM = r"""
#include <stdio.h>

#include <clue/client.h>
#include "grpc/health/v1/health.pb-c.h"

int main(int argc, char **argv) {
  clue_conn_t *c;
  clue_status_t st = CLUE_STATUS_INIT;
  ProtobufCMessage *resp = NULL;
  Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  int rc;

  if ((argc != 3 && argc != 5) || clue_conn_new(argv[1], &c) != 0 ||
      clue_conn_set_tls(c, argv[2], argc == 5 ? argv[3] : NULL, argc == 5 ? argv[4] : NULL, &st) != 0)
    return 2;
  rc = clue_conn_connect(c, &st);
  printf("connect %s %s\n", clue_status_name(rc), st.message ? st.message : "");
  rc = clue_call(c, "/grpc.health.v1.Health/Check", &hreq.base,
                 &grpc__health__v1__health_check_response__descriptor, &resp, &st);
  printf("call %s %s\n", clue_status_name(rc), st.message ? st.message : "");
  if (rc == 0)
    protobuf_c_message_free_unpacked(resp, NULL);
  clue_status_clear(&st);
  clue_conn_free(c);
  return 0;
}
"""


def sh(*cmd, env=None, cwd=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}"
    return r.stdout


def setup():
    prefix = tempfile.mkdtemp(prefix="clued-install-")
    sh("cmake", "--install", harness.BUILD, "--prefix", prefix)
    return prefix


def teardown(prefix):
    subprocess.call(["rm", "-rf", prefix])


def test_installed_files(prefix):
    for f in ("bin/clued", "bin/cluectl", "include/clue/client.h", "include/clue/proto/clue/v1/clue.pb-c.h",
              "include/clue/proto/google/rpc/status.pb-c.h", "include/clue/proto/google/rpc/error_details.pb-c.h",
              "include/clue/proto/google/protobuf/any.pb-c.h"):
        assert os.path.exists(os.path.join(prefix, f)), f
    # descriptor.pb-c.h is clued's: libclue does not hold its code
    assert not os.path.exists(os.path.join(prefix, "include/clue/proto/google/protobuf/descriptor.pb-c.h"))
    libs = {os.path.basename(p) for p in glob.glob(os.path.join(prefix, "lib*", "**", "libclue*"), recursive=True)}
    assert "libclue.a" in libs and "libclue.so" in libs, libs
    assert glob.glob(os.path.join(prefix, "lib*", "**", "pkgconfig", "clue.pc"), recursive=True)


def defined_globals(*nm_args):
    """The global names nm finds defined; __odr_asan.NAME (the sanitizer build's marker of
    NAME) counts as NAME."""
    names = set()
    for line in sh("nm", "--defined-only", *nm_args).splitlines():
        f = line.split()
        if len(f) == 3 and f[1] in "TDRBVWGSI":  # upper case: global
            names.add(f[2].split("@")[0].removeprefix("__odr_asan."))
    return names


def test_libclue_exports_its_api_and_the_protobuf_code_alone(prefix):
    inc = os.path.join(prefix, "include", "clue")
    api = set(re.findall(r"^[a-z][\w *]*?\b(clue_[a-z]\w*)\(", open(os.path.join(inc, "client.h")).read(), re.M))
    assert {"clue_call", "clue_conn_new", "clue_status_name", "clue_to_json"} <= api, api
    generated, descriptors = set(), set()
    for h in glob.glob(os.path.join(inc, "proto", "**", "*.pb-c.h"), recursive=True):
        text = open(h).read()
        generated |= set(re.findall(r"\b([a-z][a-z0-9_]*__[a-z0-9_]+)\b", text))
        descriptors |= set(re.findall(r"^extern const ProtobufC\w*Descriptor (\w+);", text, re.M))
    assert "google__rpc__status__descriptor" in descriptors, sorted(descriptors)[:20]
    # protobuf-c's .c files define one name their headers do not declare, beside each service's
    generated |= {d[: -len("descriptor")] + "method_indices_by_name" for d in descriptors}
    shared = glob.glob(os.path.join(prefix, "lib*", "**", "libclue.so"), recursive=True)[0]
    static = glob.glob(os.path.join(prefix, "lib*", "**", "libclue.a"), recursive=True)[0]

    exported = defined_globals("-D", shared)
    assert not exported - api - generated, sorted(exported - api - generated)
    assert not api - exported, sorted(api - exported)
    assert not descriptors - exported, sorted(descriptors - exported)

    # A static library cannot hide its internal names, but they all carry libclue's prefix.
    foreign = {n for n in defined_globals("-g", static) - generated if not n.startswith("clue_")}
    assert not foreign, sorted(foreign)


def test_version_names_commit_and_schema(prefix):
    out = sh(os.path.join(prefix, "bin", "clued"), "version")
    sql = sorted(os.path.basename(p) for p in glob.glob(os.path.join(harness.SRC, "migrations", "*.sql")))
    latest = sql[-1]
    assert re.search(r"^clued \d+\.\d+\.\d+$", out, re.M), out
    assert re.search(r"^commit ([0-9a-f]{7,40}(-dirty)?|unknown)$", out, re.M), out
    assert f"schema {int(latest.split('_')[0])} ({latest})" in out, out


def compile_program(prefix, name, source, static=False):
    """source built against the installed libclue as a user's program is (pkg-config), linked
    to the shared library or, if static, to the archive; the path of the program."""
    pc = glob.glob(os.path.join(prefix, "lib*", "**", "pkgconfig", "clue.pc"), recursive=True)[0]
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pc))
    cflags = sh("pkg-config", "--cflags", "clue", env=env).split()
    san = os.environ.get("CLUED_TEST_CFLAGS", "").split()  # the test build's libclue has ASan/UBSan
    src, prog = os.path.join(prefix, name + ".c"), os.path.join(prefix, name)
    with open(src, "w") as f:
        f.write(source)
    if static:
        libs = sh("pkg-config", "--static", "--libs", "clue", env=env).split()
        link = ["-Wl,-Bstatic", "-lclue", "-Wl,-Bdynamic", *[a for a in libs if a != "-lclue"]]
    else:
        link = sh("pkg-config", "--libs", "clue", env=env).split()
        link.append(f"-Wl,-rpath,{os.path.dirname(os.path.dirname(pc))}")
    sh("cc", *san, *cflags, src, "-o", prog, *link)
    return prog


def test_installed_clued_migrates_serves_and_a_c_program_calls_it(prefix):
    shared = compile_program(prefix, "prog-shared", PROGRAM)
    static = compile_program(prefix, "prog-static", PROGRAM, static=True)
    assert "libclue.so" in sh("ldd", shared) and "libclue.so" not in sh("ldd", static)

    url = harness.test_database_url()
    installed = os.path.join(prefix, "bin", "clued")
    harness.CLUED = installed  # harness.Clued runs the installed binary from here on
    srv = harness.Clued(url)
    for want in ("applied", "built in"):
        out = subprocess.run([installed, "migrate", "--database-url", srv.database_url], capture_output=True,
                             text=True, cwd=prefix, timeout=120)  # as the schema's owner, as harness.Clued does
        assert out.returncode == 0 and want in out.stdout + out.stderr, out.stdout + out.stderr
    srv.start(migrate=False)
    try:
        token = world.bootstrap_token(srv)
        import psycopg2

        conn = psycopg2.connect(url)
        with conn.cursor() as cur:
            cur.execute("SELECT name, checksum FROM schema_migrations ORDER BY version")
            rows = cur.fetchall()
        conn.close()
        want = [(os.path.basename(p), hashlib.sha256(open(p, "rb").read()).hexdigest())
                for p in sorted(glob.glob(os.path.join(harness.SRC, "migrations", "*.sql")))]
        assert rows == want, (rows, want)
        for prog in (shared, static):
            r = subprocess.run([prog, srv.addr, token], capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
            assert r.returncode == 0, f"{prog} exited {r.returncode}:\n{r.stdout}{r.stderr}"
            assert "health 1" in r.stdout and "unit " in r.stdout, r.stdout
            assert "unknown service NOT_FOUND" in r.stdout, r.stdout  # libclue's own status names
            assert "detail ResourceInfo google.protobuf.ServiceDescriptorProto no.such.Service" in r.stdout, r.stdout
    finally:
        srv.stop()


def test_a_server_refusing_the_client_certificate_says_why(prefix):
    """With mTLS, a TLS 1.3 server judges the client's certificate after the client's handshake
    has ended: connecting succeeds, and the server's alert arrives as the client writes. The
    call's error gives the alert's reason, not the write it cut short ("Broken pipe")."""
    import test_tls

    prog = compile_program(prefix, "tls-prog", TLS_PROGRAM)
    certs = test_tls.Certs()
    srv = test_tls.TlsClued(certs, harness.test_database_url(), client="client",
                            args=["--tls-client-ca", certs.path("ca.pem")])
    try:
        srv.start()
        ca = certs.path("ca.pem")
        for extra, want in (((certs.path("client.pem"), certs.path("client.key")), "call OK"),
                            ((), "certificate required"),
                            ((certs.path("stranger.pem"), certs.path("stranger.key")), "unknown ca")):
            r = subprocess.run([prog, srv.addr, ca, *extra], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
            call = [ln for ln in r.stdout.splitlines() if ln.startswith("call ")]
            assert call and want in call[0], (extra, r.stdout)
    finally:
        srv.stop()
        certs.destroy()


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
