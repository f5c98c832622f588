"""scripts/run as a new user meets it: in a fresh clone below a mode-700 folder (as /root and
mktemp -d are), started, used, stopped with Ctrl-C, started again, and its set-up failures;
and scripts/run --replicated, a primary and a synchronous standby, between runs of the single
cluster, whose data it leaves alone.

The clone is made from the source tree's committed HEAD, so this tests what a user would
clone. When run as root it also runs scripts/run as an unprivileged user made with useradd.
Each step builds on the one before; the steps run in order.
"""

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from harness import SRC, Postgres, free_port, run_tests, wait_for

IS_ROOT = os.getuid() == 0


def user_env(ctx):
    """A user's environment: none of the test flavour's variables, clued on the test's port."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("CLUED_", "ASAN_", "UBSAN_", "CTEST"))}
    e["CLUED_LISTEN"] = f"127.0.0.1:{ctx.port}"
    # Port 0: a free port for the metrics endpoint, so runs beside each other never collide.
    e["CLUED_METRICS_LISTEN"] = "127.0.0.1:0"
    return e


def run_once(ctx, *args, timeout=300):
    """scripts/run that is expected to end by itself; returns CompletedProcess (text)."""
    return subprocess.run(["scripts/run", *args], cwd=ctx.clone, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, env=user_env(ctx))


class Run:
    """One `scripts/run` process in its own process group (as a terminal would start it)."""

    def __init__(self, ctx, *args, user=None, env=None):
        self.ctx = ctx
        # A run an earlier (failed) step left behind would hold the port: stop it first.
        for old in getattr(ctx, "runs", []):
            if old.proc.poll() is None:
                old.ctrl_c()
                try:
                    old.proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(old.proc.pid, signal.SIGKILL)
        ctx.runs = [self]
        e = {**user_env(ctx), **(env or {})}
        cmd = ["scripts/run", *args]
        if user:
            cmd = ["runuser", "-u", user, "--", "env", f"HOME={ctx.tmp}", *cmd]
        self.log = open(os.path.join(ctx.tmp, f"run-{time.time_ns()}.log"), "w+")
        self.proc = subprocess.Popen(cmd, cwd=ctx.clone, env=e, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def output(self):
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"scripts/run did not exit within {timeout}s:\n{self.output()[-3000:]}")

    def ctrl_c(self):
        """What a terminal's Ctrl-C does: SIGINT to every process of the foreground group."""
        os.killpg(self.proc.pid, signal.SIGINT)


def cluectl(ctx, *args, token=None, check=0, server=None):
    e = user_env(ctx)
    e["CLUED_SERVER"] = server or f"127.0.0.1:{ctx.port}"
    if token:
        e["CLUED_TOKEN"] = token
    cmd = [os.path.join(ctx.clone, "build", "cluectl"), *args]
    r = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=60)
    if check is not None:
        assert r.returncode == check, f"cluectl {' '.join(args)} exited {r.returncode}:\n{r.stdout}{r.stderr}"
    return r


def demo_token(ctx, code, role):
    with open(os.path.join(ctx.clone, ".local", "demo-tokens")) as f:
        for line in f:
            c, r, _name, tok = line.split()
            if c == code and r == role:
                return tok
    raise AssertionError(f"no demo token for {code} {role}")


def pgdir(ctx):
    """Where the private cluster keeps its data: .local/pg, or where that link points."""
    return os.path.realpath(os.path.join(ctx.clone, ".local", "pg"))


def replicated_dir(ctx):
    """Where scripts/run --replicated keeps its primary and standby."""
    return os.path.join(pgdir(ctx), "replicated")


def psql_pair(ctx, port, sql, dbname="postgres"):
    """One value from the pair's cluster on port (5432 the primary, 5433 the standby), asked
    as postgres on their socket, as the banner of scripts/run --replicated shows."""
    pgbin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    cmd = [os.path.join(pgbin, "psql"), "-h", os.path.join(replicated_dir(ctx), "run"), "-p", str(port),
           "-U", "postgres", "-d", dbname, "-Atc", sql]
    if IS_ROOT:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    r = subprocess.run(cmd, cwd="/", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"psql on port {port}: {r.stderr}"
    return r.stdout.strip()


def processes_matching(text):
    """PIDs of live processes whose command line contains text."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{p}/stat") as f:
                if f.read().split(") ")[-1].startswith("Z"):
                    continue
        except OSError:
            continue
        if text in cmd:
            out.append(int(p))
    return out


def wait_serving(ctx, run, timeout):
    def serving():
        assert run.proc.poll() is None, f"scripts/run exited {run.proc.returncode}:\n{run.output()[-4000:]}"
        if "clued is starting" not in run.output():
            return False  # still building or migrating
        return cluectl(ctx, "health", check=None).stdout.strip() == "SERVING"

    wait_for(serving, timeout=timeout, interval=0.5, what="SERVING from scripts/run")


def assert_all_stopped(ctx, run):
    rc = run.wait(90)
    out = run.output()
    assert rc in (0, 130), f"scripts/run exited {rc}:\n{out[-3000:]}"
    assert "clued stopped" in out and "PostgreSQL stopped" in out, out[-2000:]
    data = os.path.join(pgdir(ctx), "data")
    wait_for(lambda: not processes_matching(data), timeout=10, what="PostgreSQL to be gone")
    assert not os.path.exists(os.path.join(data, "postmaster.pid")), "the cluster left its pid file"
    assert not processes_matching(f"build/clued serve --listen 127.0.0.1:{ctx.port}"), "clued still runs"
    # Nothing listens on the port any more.
    s = socket.socket()
    try:
        assert s.connect_ex(("127.0.0.1", ctx.port)) != 0, "the port still answers"
    finally:
        s.close()


class Ctx:
    pass


def setup():
    ctx = Ctx()
    ctx.tmp = tempfile.mkdtemp(prefix="clued-run-")
    os.chmod(ctx.tmp, 0o700)  # like /root, and like every mktemp -d
    ctx.clone = os.path.join(ctx.tmp, "clued")
    subprocess.check_call(["git", "clone", "-q", SRC, ctx.clone])
    ctx.port = free_port()
    ctx.user = None
    return ctx


def teardown(ctx):
    for run in getattr(ctx, "runs", []):
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGINT)
            try:
                run.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(run.proc.pid, signal.SIGKILL)
    for u in [ctx.user] if ctx.user else []:
        subprocess.call(["pkill", "-KILL", "-u", u])
    if os.path.isdir(ctx.clone):
        subprocess.call(["scripts/run", "--reset", "--yes"], cwd=ctx.clone, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    if ctx.user:
        subprocess.call(["userdel", ctx.user], stderr=subprocess.DEVNULL)
    shutil.rmtree(ctx.tmp, ignore_errors=True)


def test_busy_ports_are_named_and_the_advice_moves_each(ctx):
    """A port in use, for gRPC or for the metrics, is named before anything starts, and the
    command printed moves each busy one to a port nothing listens on (the metrics port too:
    another scripts/run holds both, and moving the gRPC port alone failed on the metrics)."""
    held = []
    for port in (ctx.port, 0):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(8)
        held.append(s)
    mport = held[1].getsockname()[1]
    env = dict(user_env(ctx), CLUED_METRICS_LISTEN=f"127.0.0.1:{mport}")

    def run():
        r = subprocess.run(["scripts/run"], cwd=ctx.clone, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=120, env=env)
        assert r.returncode == 1 and "scripts/deps" not in r.stdout, r.stdout + r.stderr
        m = re.search(r"serve elsewhere: CLUED_LISTEN=127\.0\.0\.1:(\d+)"
                      r"(?: CLUED_METRICS_LISTEN=127\.0\.0\.1:(\d+))? scripts/run$", r.stderr.strip())
        assert m, r.stderr
        return r.stderr, int(m.group(1)), m.group(2) and int(m.group(2))

    def free(port):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            return s.connect_ex(("127.0.0.1", port)) != 0
    try:
        err, g, m = run()
        assert f"port {ctx.port} on 127.0.0.1 and metrics port {mport} on 127.0.0.1 are in use" in err, err
        assert g != ctx.port and m not in (None, mport, g) and free(g) and free(m), (g, m)
        held.pop(0).close()
        err, g, m = run()
        assert f"metrics port {mport} on 127.0.0.1 is in use" in err, err
        assert g == ctx.port and m not in (None, mport) and free(m), (g, m)
    finally:
        for s in held:
            s.close()


def test_first_run_serves_and_ctrl_c_stops_everything(ctx):
    run = Run(ctx)
    wait_serving(ctx, run, timeout=800)  # the first run builds
    out = run.output()
    for role in ("ADMIN", "AUDITOR", "LEADER", "MEMBER"):
        assert re.search(rf"^\s*{role}\s+export CLUED_TOKEN=", out, re.M), f"no line for {role}:\n{out}"
    # The console was built and is served where the banner says.
    url = f"http://127.0.0.1:{ctx.port}/"
    assert re.search(rf"^The console .*: {re.escape(url)}$", out, re.M), out
    with urllib.request.urlopen(url, timeout=10) as r:
        page = r.read().decode()
    assert r.status == 200 and "<title>线索监督台" in page and 'src="/assets/main-' in page, page
    # CLUED_METRICS_LISTEN has port 0: the banner names the port clued serves its metrics on.
    m = re.search(r"^\s*curl -s http://127\.0\.0\.1:(\d+)/metrics", out, re.M)
    assert m and m.group(1) != "0", out
    with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/metrics", timeout=10) as r:
        assert "clued_" in r.read().decode()
    r = cluectl(ctx, "clue", "submit", "--title", "第一次运行", "--summary", "s", "--source", "AUDIT",
                "--subject-name", "张三", "--host-unit", "市统计局", "--json", token=demo_token(ctx, "G01", "MEMBER"))
    ctx.clue_id = re.search(r'"id":\s*"?(\d+)', r.stdout).group(1)
    # The demo auditor reads every clue and the whole audit trail.
    auditor = demo_token(ctx, "ADM", "AUDITOR")
    assert "第一次运行" in cluectl(ctx, "clue", "get", ctx.clue_id, token=auditor).stdout
    assert cluectl(ctx, "audit", "verify", token=auditor).stdout.startswith("OK")
    if IS_ROOT:
        # The data lives outside the checkout, owned by postgres; the checkout kept its modes.
        assert not pgdir(ctx).startswith(ctx.tmp), pgdir(ctx)
        assert os.stat(ctx.tmp).st_mode & 0o777 == 0o700
        assert os.stat(os.path.join(ctx.clone, ".local")).st_mode & 0o777 == 0o700
    run.ctrl_c()
    assert_all_stopped(ctx, run)


def test_second_run_keeps_the_clue(ctx):
    run = Run(ctx)
    wait_serving(ctx, run, timeout=300)
    r = cluectl(ctx, "clue", "get", ctx.clue_id, token=demo_token(ctx, "G01", "MEMBER"))
    assert "第一次运行" in r.stdout, r.stdout
    ctx.running = run


def test_port_in_use_is_named(ctx):
    # A second scripts/run on the port of the first, which keeps serving.
    r = run_once(ctx)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"port {ctx.port}" in r.stderr and "in use" in r.stderr and "CLUED_LISTEN=" in r.stderr, r.stderr
    assert cluectl(ctx, "health").stdout.strip() == "SERVING"


def test_reset_is_refused_while_a_run_serves(ctx):
    # A second terminal's --reset would stop the cluster and remove the data under the first.
    r = run_once(ctx, "--reset", "--yes")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"serving from the private cluster (pid {ctx.running.proc.pid}); stop it first" in r.stderr, r.stderr
    assert os.path.exists(os.path.join(pgdir(ctx), "data", "PG_VERSION")), "the data went"
    assert os.path.exists(os.path.join(ctx.clone, ".local", "demo-tokens")), "the tokens went"
    assert cluectl(ctx, "health").stdout.strip() == "SERVING"
    # The pair is another cluster: its reset goes ahead.
    r = run_once(ctx, "--replicated", "--reset", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert cluectl(ctx, "health").stdout.strip() == "SERVING"


def test_sigint_to_the_script_alone_stops_everything(ctx):
    run = ctx.running
    run.proc.send_signal(signal.SIGINT)  # kill -INT <pid of scripts/run>
    assert_all_stopped(ctx, run)


def test_another_database_needs_its_owners_url(ctx):
    """clued migrates as the schema's owner and refuses to serve as it, so CLUED_DATABASE_URL
    alone can never work: refused before anything is built or started."""
    pg = Postgres.get()
    ctx.other_db = pg.new_database("run")
    for owner in (None, pg.url(ctx.other_db, "clued")):
        env = dict(user_env(ctx), CLUED_DATABASE_URL=pg.url(ctx.other_db, "clued"))
        if owner:
            env["CLUED_OWNER_DATABASE_URL"] = owner
        r = subprocess.run(["scripts/run"], cwd=ctx.clone, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=120, env=env)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "set CLUED_OWNER_DATABASE_URL too" in r.stderr and r.stdout == "", r.stdout + r.stderr


def test_another_database_gets_an_admin_and_tokens_of_its_own(ctx):
    """After the private cluster made .local/admin-token, another database is bootstrapped
    all the same, its tokens kept apart; the banner names the port picked for port 0, no
    metrics with CLUED_METRICS_LISTEN=off, and no private cluster."""
    pg = Postgres.get()
    with open(os.path.join(ctx.clone, ".local", "admin-token")) as f:
        private_admin = f.read()
    run = Run(ctx, env={"CLUED_LISTEN": "127.0.0.1:0", "CLUED_METRICS_LISTEN": "off",
                        "CLUED_DATABASE_URL": pg.url(ctx.other_db, "clued"),
                        "CLUED_OWNER_DATABASE_URL": pg.url(ctx.other_db, "clued_owner")})
    server = []

    def serving():
        assert run.proc.poll() is None, f"scripts/run exited {run.proc.returncode}:\n{run.output()[-4000:]}"
        m = re.search(r"^\s*export CLUED_SERVER=(\S+)$", run.output(), re.M)
        if not m:
            return False
        server[:] = [m.group(1)]
        return cluectl(ctx, "health", check=None, server=m.group(1)).stdout.strip() == "SERVING"

    wait_for(serving, timeout=300, interval=0.5, what="SERVING from scripts/run on another database")
    out = run.output()
    assert not server[0].endswith(":0") and f"The console (a web page; sign in with one of the tokens below): " \
        f"http://{server[0]}/" in out, out
    assert "/metrics" not in out and "http://off" not in out, out
    assert "private cluster" not in out and "CLUED_DATABASE_URL keeps running" in out, out
    admin_file = re.search(r"^\s*ADMIN\s+export CLUED_TOKEN=\$\(cat (\S+)\)", out, re.M).group(1)
    assert admin_file.startswith(".local/db-") and admin_file.endswith("-admin-token"), out
    with open(os.path.join(ctx.clone, admin_file)) as f:
        admin = f.read().strip()
    with open(os.path.join(ctx.clone, ".local", "admin-token")) as f:
        assert f.read() == private_admin, "the private cluster's admin token changed"
    assert admin != private_admin.strip()
    assert "G01" in cluectl(ctx, "admin", "units", token=admin, server=server[0]).stdout
    demo_file = os.path.join(ctx.clone, admin_file.replace("admin-token", "demo-tokens"))
    with open(demo_file) as f:
        member = next(line.split()[3] for line in f if line.split()[:2] == ["G01", "MEMBER"])
    cluectl(ctx, "clue", "submit", "--title", "另一个库", "--summary", "s", "--source", "AUDIT",
            "--subject-name", "赵六", "--host-unit", "市统计局", token=member, server=server[0])
    run.ctrl_c()
    rc = run.wait(90)
    out = run.output()
    assert rc in (0, 130) and "clued stopped" in out and "PostgreSQL" not in out.split("clued stopped")[1], out[-2000:]


def test_replicated_pair_serves_and_ctrl_c_stops_both(ctx):
    # The single cluster of the steps before is stopped and keeps its data; the pair is new.
    run = Run(ctx, "--replicated")
    wait_serving(ctx, run, timeout=120)
    out = run.output()
    primary = os.path.join(replicated_dir(ctx), "primary")
    standby = os.path.join(replicated_dir(ctx), "standby")
    assert processes_matching(primary) and processes_matching(standby), out[-3000:]
    assert not processes_matching(os.path.join(pgdir(ctx), "data")), "the single cluster was started too"
    assert psql_pair(ctx, 5432, "SELECT application_name || ' ' || sync_state FROM pg_stat_replication") \
        == "standby1 sync"
    assert psql_pair(ctx, 5433, "SELECT pg_is_in_recovery()") == "t"
    # Only the primary names a synchronous standby: a promoted standby must not wait for one.
    assert psql_pair(ctx, 5433, "SHOW synchronous_standby_names") == ""
    # clued has both clusters in its URL and keeps to the one that accepts writes.
    [pid] = processes_matching(f"build/clued serve --listen 127.0.0.1:{ctx.port}")
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(v.split("=", 1) for v in f.read().decode().split("\0") if "=" in v)
    assert "port=5432,5433" in env["CLUED_DATABASE_URL"], env["CLUED_DATABASE_URL"]
    assert "target_session_attrs=read-write" in env["CLUED_DATABASE_URL"], env["CLUED_DATABASE_URL"]
    if "--replica-url" in subprocess.run([os.path.join(ctx.clone, "build", "clued"), "help"], capture_output=True,
                                         text=True).stdout:
        assert "port=5433" in env["CLUED_REPLICA_URL"], env.get("CLUED_REPLICA_URL")
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().decode().split("\0")
    clued_help = subprocess.run([os.path.join(ctx.clone, "build", "clued"), "help"], capture_output=True,
                                text=True).stdout
    assert ("--require-sync-replica" in cmdline) == ("--require-sync-replica" in clued_help), cmdline
    # The pair has demo users of its own; a clue submitted through clued reaches the standby.
    with open(os.path.join(ctx.clone, ".local", "replicated-demo-tokens")) as f:
        member = next(line.split()[3] for line in f if line.split()[:2] == ["G01", "MEMBER"])
    cluectl(ctx, "clue", "submit", "--title", "两台数据库", "--summary", "s", "--source", "AUDIT",
            "--subject-name", "王五", "--host-unit", "市统计局", token=member)
    wait_for(lambda: psql_pair(ctx, 5433, "SELECT count(*) FROM clues WHERE title = '两台数据库'", "clued") == "1",
             timeout=10, what="the clue on the standby")
    # The banner says how to fail over by hand, with the pair's paths.
    assert f"pg_ctl -D {primary} stop -m immediate" in out and f"pg_ctl -D {standby} promote" in out, out
    # ... and that clued then refuses writes, until a new pair.
    assert "After the failover clued serves reads only: --require-sync-replica refuses every write" in out, out
    run.ctrl_c()
    rc = run.wait(90)
    out = run.output()
    assert rc in (0, 130), f"scripts/run exited {rc}:\n{out[-3000:]}"
    assert "clued stopped" in out and "stopping the standby" in out and "stopping the primary" in out, out[-2000:]
    assert out.index("stopping the standby") < out.index("stopping the primary"), out[-2000:]
    assert "PostgreSQL stopped" in out, out[-2000:]
    wait_for(lambda: not processes_matching(primary) and not processes_matching(standby), timeout=10,
             what="the pair to be gone")
    for data in (primary, standby):
        assert not os.path.exists(os.path.join(data, "postmaster.pid")), f"{data} left its pid file"
    assert not processes_matching(f"build/clued serve --listen 127.0.0.1:{ctx.port}"), "clued still runs"


def test_double_ctrl_c_leaves_no_half_stopped_cluster(ctx):
    run = Run(ctx)
    wait_serving(ctx, run, timeout=300)
    # Keep a call in flight so that clued takes a moment to stop, then press Ctrl-C twice.
    watch = subprocess.Popen([os.path.join(ctx.clone, "build", "cluectl"), "audit", "watch", "--after-seq", "0"],
                             env={**user_env(ctx), "CLUED_SERVER": f"127.0.0.1:{ctx.port}",
                                  "CLUED_TOKEN": demo_token(ctx, "ADM", "AUDITOR")},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    run.ctrl_c()
    time.sleep(0.2)
    run.ctrl_c()
    assert_all_stopped(ctx, run)
    watch.wait(30)


def kill_hard(ctx, run, cluster_too):
    """As a crash or a power cut would: SIGKILL scripts/run and clued, and the cluster too."""
    os.killpg(run.proc.pid, signal.SIGKILL)
    run.proc.wait(30)
    for pid in processes_matching(f"build/clued serve --listen 127.0.0.1:{ctx.port}"):
        os.kill(pid, signal.SIGKILL)
    if cluster_too:
        for pid in processes_matching(os.path.join(pgdir(ctx), "data")):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not processes_matching(os.path.join(pgdir(ctx), "data")), timeout=10, what="cluster gone")


def test_run_while_an_earlier_cluster_is_still_up(ctx):
    run = Run(ctx)
    wait_serving(ctx, run, timeout=300)
    kill_hard(ctx, run, cluster_too=False)
    assert processes_matching(os.path.join(pgdir(ctx), "data")), "the cluster should still be up"
    run = Run(ctx)
    wait_serving(ctx, run, timeout=300)
    assert "already running" in run.output()
    run.ctrl_c()
    assert_all_stopped(ctx, run)


def test_run_after_a_crash_of_everything(ctx):
    # Like a reboot: nothing runs, and the cluster's pid file is left behind.
    run = Run(ctx)
    wait_serving(ctx, run, timeout=300)
    kill_hard(ctx, run, cluster_too=True)
    assert os.path.exists(os.path.join(pgdir(ctx), "data", "postmaster.pid"))
    run = Run(ctx)
    wait_serving(ctx, run, timeout=300)
    r = cluectl(ctx, "clue", "get", ctx.clue_id, token=demo_token(ctx, "G01", "MEMBER"))
    assert "第一次运行" in r.stdout, r.stdout
    run.ctrl_c()
    assert_all_stopped(ctx, run)


def zombie():
    """A child that has exited and was never reaped, as a crashed postmaster is under an init
    that does not reap: its pid still answers kill(pid, 0)."""
    child = subprocess.Popen(["true"])
    wait_for(lambda: open(f"/proc/{child.pid}/stat").read().split(") ")[-1].startswith("Z"),
             timeout=10, what="the child to become a zombie")
    return child


def point_pid_file_at(ctx, pid):
    path = os.path.join(pgdir(ctx), "data", "postmaster.pid")
    with open(path) as f:
        lines = f.read().split("\n")
    lines[0] = str(pid)
    with open(path, "w") as f:
        f.write("\n".join(lines))


def test_run_after_a_crash_whose_pid_is_a_zombie_or_reused(ctx):
    # In a container whose init does not reap, the killed postmaster stays a zombie; after a
    # reboot its pid may belong to any other process. Neither is a running cluster.
    for stand_in in ("zombie", "unrelated process"):
        run = Run(ctx)
        wait_serving(ctx, run, timeout=300)
        kill_hard(ctx, run, cluster_too=True)
        other = zombie() if stand_in == "zombie" else subprocess.Popen(["sleep", "300"])
        try:
            point_pid_file_at(ctx, other.pid)
            run = Run(ctx)
            wait_serving(ctx, run, timeout=300)
            assert "already running" not in run.output(), f"{stand_in}: {run.output()[-2000:]}"
            assert "stale" in run.output(), run.output()[-2000:]
            run.ctrl_c()
            assert_all_stopped(ctx, run)
        finally:
            other.kill()
            other.wait()


def test_cluster_that_cannot_start_shows_its_log(ctx):
    conf = os.path.join(pgdir(ctx), "data", "postgresql.conf")
    with open(conf) as f:
        saved = f.read()
    with open(conf, "a") as f:
        f.write("\nclued_test_bogus_setting = 1\n")
    try:
        r = run_once(ctx)
    finally:
        with open(conf, "w") as f:
            f.write(saved)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "did not start" in r.stderr and "clued_test_bogus_setting" in r.stderr, r.stderr
    assert "--reset" in r.stderr


def test_reset_asks_then_removes_cluster_and_tokens(ctx):
    data = pgdir(ctx)
    r = run_once(ctx, "--reset")
    assert r.returncode == 1 and "--yes" in r.stderr, r.stdout + r.stderr
    assert os.path.exists(os.path.join(data, "data", "PG_VERSION")), "removed without confirmation"
    # With --replicated only the pair and its tokens go.
    r = run_once(ctx, "--replicated", "--reset", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    for p in (replicated_dir(ctx), os.path.join(ctx.clone, ".local", "replicated-demo-tokens"),
              os.path.join(ctx.clone, ".local", "replicated-admin-token")):
        assert not os.path.lexists(p), f"{p} survived --replicated --reset"
    for p in (os.path.join(data, "data", "PG_VERSION"), os.path.join(ctx.clone, ".local", "demo-tokens")):
        assert os.path.exists(p), f"--replicated --reset removed {p}"
    r = run_once(ctx, "--reset", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    for p in (data, os.path.join(ctx.clone, ".local", "pg"), os.path.join(ctx.clone, ".local", "demo-tokens"),
              os.path.join(ctx.clone, ".local", "admin-token")):
        assert not os.path.lexists(p), f"{p} survived --reset"
    r = run_once(ctx, "--bogus")
    assert r.returncode == 2 and "usage" in r.stderr, r.stderr
    r = run_once(ctx, "--help")
    assert r.returncode == 0 and "--reset" in r.stdout and "--replicated" in r.stdout and "CLUED_LISTEN" in r.stdout


def test_unprivileged_user(ctx):
    if not IS_ROOT:
        return  # the runs above were already unprivileged
    ctx.user = f"cluedrun{os.getpid()}"
    subprocess.check_call(["useradd", "--no-create-home", "--shell", "/bin/bash", ctx.user])
    subprocess.check_call(["chown", "-R", f"{ctx.user}:", ctx.tmp])
    run = Run(ctx, user=ctx.user)
    wait_serving(ctx, run, timeout=600)
    # As that user the cluster lives in the checkout, owned by the user.
    assert pgdir(ctx) == os.path.join(ctx.clone, ".local", "pg")
    assert os.stat(os.path.join(pgdir(ctx), "data")).st_uid != 0
    r = cluectl(ctx, "clue", "submit", "--title", "普通用户", "--summary", "s", "--source", "AUDIT",
                "--subject-name", "李四", "--host-unit", "市统计局", token=demo_token(ctx, "G01", "MEMBER"))
    assert "submitted" in r.stdout, r.stdout
    run.ctrl_c()
    assert_all_stopped(ctx, run)
    run = Run(ctx, user=ctx.user)
    wait_serving(ctx, run, timeout=300)
    run.ctrl_c()
    assert_all_stopped(ctx, run)


if __name__ == "__main__":
    run_tests(globals(), setup=setup, teardown=teardown)
