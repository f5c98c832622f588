"""clued's one-shot commands and what serve says at start-up: bootstrap's demo tokens go only to
a new file (never an existing one, never through a symlink), and two bootstraps at once end
with one demo and one clear answer; settings serve would ignore are warned of; `clued version`
takes no arguments."""

import os
import re
import stat
import subprocess
import tempfile
import threading

import harness


def migrated():
    pg = harness.Postgres.get()
    srv = harness.Clued(pg.url(pg.new_database("boot")))
    srv.run("migrate")
    return pg, srv


def count(pg, srv, sql):
    dbname = re.search(r"postgresql:///([^?]+)", srv.database_url).group(1)
    conn = pg.connect(dbname)
    with conn.cursor() as cur:
        cur.execute(sql)
        n = cur.fetchone()[0]
    conn.close()
    return n


def test_demo_tokens_never_go_to_an_existing_file_or_through_a_symlink():
    pg, srv = migrated()
    d = tempfile.mkdtemp(prefix="clued-demo-")
    victim = os.path.join(d, "victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    os.chmod(victim, 0o644)
    link = os.path.join(d, "link")
    os.symlink(victim, link)
    for path in (link, victim):
        r = srv.run("bootstrap", "--demo-tokens", path, check=False)
        assert r.returncode == 1, r
        assert f"--demo-tokens {path} exists" in r.stderr and "remove it or name another" in r.stderr, r.stderr
        with open(victim) as f:
            assert f.read() == "precious\n"
        assert os.stat(victim).st_mode & 0o777 == 0o644
        assert count(pg, srv, "SELECT count(*) FROM units WHERE kind <> 'ADMIN'") == 0
        # Refused before anything is made: no administrator either, no token printed.
        assert count(pg, srv, "SELECT count(*) FROM users") == 0 and "ct_" not in r.stdout, r
    # A new file: mode 0600, every demo user's token.
    path = os.path.join(d, "tokens")
    r = srv.run("bootstrap", "--demo-tokens", path)
    assert "their tokens are in" in r.stdout, r
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) == 13 and any(" AUDITOR " in ln for ln in lines), lines
    # A directory that is not there: nothing made, no file.
    pg2, srv2 = migrated()
    r = srv2.run("bootstrap", "--demo-tokens", os.path.join(d, "missing", "tokens"), check=False)
    assert r.returncode == 1 and "cannot create it" in r.stderr, r
    assert count(pg2, srv2, "SELECT count(*) FROM units WHERE kind <> 'ADMIN'") == 0


def test_two_bootstraps_at_once():
    # Before: one failed with a raw duplicate-key error (SQL and all) and left an empty tokens
    # file. Now the check and the writes are one transaction under admin_bootstrap's lock.
    pg, srv = migrated()
    d = tempfile.mkdtemp(prefix="clued-demo-")
    paths = [os.path.join(d, "a"), os.path.join(d, "b")]
    out = [None, None]

    def one(i):
        cmd = [harness.CLUED, "bootstrap", "--demo-tokens", paths[i], "--database-url", srv.database_url]
        out[i] = subprocess.run(cmd, env=srv.env, capture_output=True, text=True, timeout=120)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in out:
        assert r.returncode == 0, r
        assert "ERROR" not in r.stderr and "duplicate key" not in r.stderr, r.stderr
    made = [i for i in range(2) if "created demo units" in out[i].stdout]
    assert len(made) == 1, [r.stdout for r in out]
    assert "demo units already exist; nothing changed" in out[1 - made[0]].stdout, out
    assert os.path.getsize(paths[made[0]]) > 0 and not os.path.exists(paths[1 - made[0]])
    assert count(pg, srv, "SELECT count(*) FROM users WHERE role = 'ADMIN'") == 1
    assert count(pg, srv, "SELECT count(*) FROM units") == 7


def serve_lines(*args):
    """The warn and error lines of a serve started with args, stopped once listening."""
    pg = harness.Postgres.get()
    srv = harness.Clued(pg.url(pg.new_database("flags")), args=list(args))
    srv.start()
    out = srv.stop()
    return [ln for ln in out.splitlines() if " clued: warn: " in ln or " clued: error: " in ln]


def test_settings_serve_would_ignore_are_warned_of():
    warns = serve_lines("--checkpoint-every", "5", "--db-queue-per-conn", "10", "--max-concurrent-streams", "100",
                        "--max-conn-inbound", "2000000", "--max-inbound", "1000000", "--max-user-inbound", "3000000",
                        "--db-pool", "4", "--db-conns-per-user", "6", "--db-queue-per-user", "5")
    text = "\n".join(warns)
    assert "--max-user-inbound 3000000 is above --max-inbound 1000000" in text, text
    assert "--db-conns-per-user 6 is above --db-pool 4" in text, text
    assert "--db-queue-per-user 5 is below --db-queue-per-conn 10" in text, text
    assert "--checkpoint-every has no effect without --audit-signing-key" in text, text
    assert "--db-queue-per-conn 10 is below --max-concurrent-streams 100" in text, text
    assert "--max-conn-inbound 2000000 is above --max-inbound 1000000" in text, text
    assert "--checkpoint-interval has no effect" in "\n".join(serve_lines("--checkpoint-interval", "5s"))
    assert "one user's share of the database queue (128, --db-queue-per-user) is not below --db-queue 64" in \
        "\n".join(serve_lines("--db-queue", "64"))
    assert serve_lines() == []


def test_version_takes_no_arguments():
    r = subprocess.run([harness.CLUED, "version", "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and 'version takes no arguments (got "--bogus")' in r.stderr, r
    assert r.stdout == "", r.stdout
    r = subprocess.run([harness.CLUED, "version", "extra"], capture_output=True, text=True)
    assert r.returncode == 2, r
    r = subprocess.run([harness.CLUED, "version", "--log-format", "json"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("clued "), r


def test_an_option_of_another_command_is_a_usage_error():
    """`bootstrap --repair` used to say nothing changed and exit 0, repairing nothing: an
    option the command does not read is refused, naming it, before anything is done."""
    url = "postgresql:///nowhere?host=/nonexistent"
    for args, opt in ((["bootstrap", "--repair"], "repair"), (["migrate", "--new-admin"], "new-admin"),
                      (["migrate", "--demo-tokens", "/tmp/x"], "demo-tokens"), (["keygen", "--db-pool", "4"], "db-pool"),
                      (["serve", "--repair"], "repair"), (["bootstrap", "--listen", "127.0.0.1:0"], "listen")):
        r = subprocess.run([harness.CLUED, *args, "--database-url", url] if args[0] != "keygen" else
                           [harness.CLUED, *args, "--out", "/nonexistent/k"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, r
        assert f"--{opt} is not an option of {args[0]}" in r.stderr, r.stderr
    help_text = subprocess.run([harness.CLUED, "help"], capture_output=True, text=True, timeout=30).stdout
    assert "migrate takes --database-url, --migrations, --allow-superuser and --repair" in help_text, help_text
    # The options a command reads still pass (and fail later, on the unreachable database).
    r = subprocess.run([harness.CLUED, "migrate", "--repair", "--log-format", "json", "--database-url", url],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "not an option" not in r.stderr, r


if __name__ == "__main__":
    harness.run_tests(dict(globals()))
