#!/usr/bin/env python3
"""Replay a corpus through a peer spam filter, TREC-style, from an empty database.

Usage: replay.py PEER INDEX MODE OUT [--profile NAME] [--click-spam P]
                 [--click-ham Q] [--seed N]
       replay.py --self-check
  PEER   bogofilter | spamassassin | crm114 | rspamd
  INDEX  corpus index file: lines "spam PATH" / "ham PATH" (PATH relative to
         the index's folder), in arrival order
  MODE   every  -- gold feedback after every message (TREC immediate feedback)
         errors -- feedback only when the peer was wrong (or, bogofilter, Unsure)
         clicks -- a user's clicks, as `chaff eval --train clicks`: spam the
                   peer delivered (its own verdict not spam) is fed back with
                   probability P, ham it filed as spam with probability Q,
                   nothing else.  --profile diligent (P = Q = 1), typical
                   (P = 0.5, Q = 0.2, the default) or spam-only (P = 0.5,
                   Q = 0); --click-spam / --click-ham override the profile.
                   Message i (0-based) is clicked iff u(seed, i) < P (or Q),
                   u = the top 53 bits of output i of SplitMix64 seeded with
                   --seed (default 0) -- the same function as
                   src/eval/clicks.rs, so chaff and the peers get the same
                   draws.  --self-check checks its test vector.
  OUT    results, one line per message: "ID SCORE GOLD JUDGED TAUGHT"
         (the format `chaff metrics` reads; SCORE: higher = spammier;
         TAUGHT: 1 if the gold label was then fed back, else 0), after a
         "#" line naming the protocol

Each message is classified first and only then (maybe) trained, so a score
never benefits from its own label.  The database lives in a fresh temporary
directory that is removed at the end; OUT is written to OUT.partial and
renamed when complete, so an interrupted run never leaves a result that
looks finished.

Standard library only: the peers are driven through their own command-line
tools (or, for SpamAssassin, a small Perl helper using its own API).
"""

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class Peer:
    """classify() -> (score, judged, unsure); train(path, gold)."""

    def __init__(self, work):
        self.work = work

    def close(self):
        pass


class Bogofilter(Peer):
    # Stock bogofilter 1.2.5 settings (robx .52, robs .0178, min_dev .375,
    # ham_cutoff .45, spam_cutoff .99); only the printed precision changes.
    # -T prints 6 significant digits; the -v header with custom formats gives
    # near-full precision: %.17f where scores crowd towards 1 (Spam, Unsure)
    # and %e where they crowd towards 0 (Ham).  bogofilter truncates the
    # formatted number at ~20 characters, hence %.12e rather than %.17e.
    FORMATS = "--spamicity-formats=%.17f, %.12e, %.17f"
    RE = re.compile(r"X-Bogosity: (Spam|Ham|Unsure), .*spamicity=([0-9.e+-]+)")

    def classify(self, path):
        if not os.path.exists(os.path.join(self.work, "wordlist.db")):
            # Nothing registered yet: bogofilter refuses to run (exit 3).
            # What it would say for a message of unknown tokens is robx,
            # i.e. Unsure.
            return 0.52, "ham", True
        r = subprocess.run(
            ["bogofilter", "-d", self.work, "-v", "-I", path, self.FORMATS],
            capture_output=True, text=True)
        m = self.RE.search(r.stdout)
        if r.returncode not in (0, 1, 2) or not m:
            raise RuntimeError(f"bogofilter failed on {path}: rc={r.returncode} {r.stderr}")
        tag, p = m.group(1), float(m.group(2))
        # JUDGED needs a side: Unsure mail is delivered, not filtered, so it
        # is ham here; MODE=errors still feeds it back, as bogofilter's docs
        # intend for Unsure mail.
        return p, "spam" if tag == "Spam" else "ham", tag == "Unsure"

    def train(self, path, gold):
        subprocess.run(["bogofilter", "-d", self.work, "-s" if gold == "spam" else "-n",
                        "-I", path], check=True)


class Crm114(Peer):
    # See crm114_osb.crm: stock mailfilter.cf classifier (osb unique
    # microgroom), thick threshold 5.0, mailtrainer's train/refute step.
    # Score = -pR (crm114's pR is positive for the good class).
    SCRIPT = os.path.join(HERE, "crm114_osb.crm")
    BEST = re.compile(r"Best match to file #([01]) .*pR: (-?[0-9.]+)")
    PR = re.compile(r"pR:\s*(-?[0-9.]+)")

    # Variants for comparison only (the default is stock behaviour):
    # CRM114_TRAIN=always learns every fed-back message with no thick
    # threshold and no refute; CRM114_THICK=N changes the thick threshold.
    TRAIN = os.environ.get("CRM114_TRAIN", "ttt")
    THICK = os.environ.get("CRM114_THICK")

    def __init__(self, work):
        super().__init__(work)
        self.prefix = work + "/"
        subprocess.run(["crm", self.SCRIPT, "--fileprefix=" + self.prefix, "--init=yes"],
                       stdin=subprocess.DEVNULL, check=True, capture_output=True)

    def _run(self, path, gold, train):
        with open(path, "rb") as f:
            r = subprocess.run(
                ["crm", self.SCRIPT, "--fileprefix=" + self.prefix,
                 "--gold=" + ("spam" if gold == "spam" else "good"),
                 "--train=" + (("always" if self.TRAIN == "always" else "yes") if train else "no")]
                + (["--thick=" + self.THICK] if self.THICK else []),
                stdin=f, capture_output=True, text=True, errors="replace")
        if r.returncode != 0:
            raise RuntimeError(f"crm failed on {path}: {r.stderr[-2000:]}")
        return r.stdout

    def classify_and_maybe_train(self, path, gold, feedback):
        """One crm process classifies and, if the replay gives feedback,
        applies mailtrainer's thick-threshold step -- the same classification
        is both the reported score and the trainer's first get_pr."""
        out = self._run(path, gold, feedback)
        m = self.BEST.search(out)
        if m:
            best, pr = int(m.group(1)), float(m.group(2))
            pr_good = pr if best == 0 else -pr
        else:
            pr_good = float(self.PR.search(out).group(1))
        return -pr_good, "spam" if pr_good < 0 else "ham", False, "trained" in out


class SpamAssassin(Peer):
    # Bayes only, via sa_bayes.pl (one long-lived Perl process).  Score =
    # Bayes probability, 0.5 while Bayes is inactive (< 200 spam or < 200 ham
    # learned, the stock bayes_min_*_num).  Judgement: probability > 0.5.
    def __init__(self, work):
        super().__init__(work)
        self.proc = subprocess.Popen(
            ["perl", os.path.join(HERE, "sa_bayes.pl"), work],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def _ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        ans = self.proc.stdout.readline()
        if not ans:
            raise RuntimeError("sa_bayes.pl died (see stderr)")
        return ans.strip()

    def classify(self, path):
        ans = self._ask("check " + os.path.abspath(path))
        p = 0.5 if ans == "none" else float(ans)
        # Bayes not scoring at all (too few learns) is reported as unsure:
        # otherwise MODE=errors would never feed back a ham (they are all
        # "correctly" judged ham at 0.5), so Bayes would never reach its 200
        # hams and never start.
        return p, "spam" if p > 0.5 else "ham", ans == "none"

    def train(self, path, gold):
        self._ask(f"learn {gold} " + os.path.abspath(path))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RSPAMD_CONF = """\
# Minimal rspamd: no plugins/rules are loaded (no `modules`/`lua` sections), so
# the only thing that scores is the Bayes classifier below, copied from
# Debian's /etc/rspamd/statistic.conf (stock: osb tokenizer, min_tokens 11,
# min_learns 200, learn_condition lua_bayes_learn.can_learn) with the redis
# server pointed at our private instance.  Loopback only, DNS pointed at an
# unused loopback port so nothing can leave the machine.
options {{
  pidfile = "{w}/rspamd.pid";
  dns {{ nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 0; }}
  filters = "";
  hs_cache_dir = "{w}";
  local_addrs = "127.0.0.0/8";
}}
# info: the only place rspamd says why it skipped a learn (reported at the end).
logging {{ type = "file"; filename = "{w}/rspamd.log"; level = "info"; }}
worker "normal" {{ bind_socket = "127.0.0.1:{normal}"; count = 1; }}
worker "controller" {{ bind_socket = "127.0.0.1:{controller}"; count = 1; secure_ip = "127.0.0.1"; }}
# Stock weights from scores.d/statistics_group.conf: the symbol score is
# weight x (rspamd's normalised probability), which is how the probability
# is read back with full precision.
group "statistics" {{
  symbols = {{
    "BAYES_SPAM" {{ weight = 5.1; }}
    "BAYES_HAM" {{ weight = -3.0; }}
  }}
}}
classifier "bayes" {{
  tokenizer {{ name = "osb"; }}
  cache {{ }}
  new_schema = true;
  store_tokens = false;
  signatures = false;
  min_tokens = 11;
  backend = "redis";
  servers = "127.0.0.1:{redis}";
  min_learns = 200;
  statfile {{ symbol = "BAYES_HAM"; spam = false; }}
  statfile {{ symbol = "BAYES_SPAM"; spam = true; }}
  learn_condition = 'return require("lua_bayes_learn").can_learn';
}}
"""


class Rspamd(Peer):
    # Talks HTTP to rspamd's own endpoints (/checkv2 on the normal worker,
    # /learnspam|/learnham on the controller) -- exactly what `rspamc symbols`
    # and `rspamc learn_spam/learn_ham` send, minus a process per message.
    def __init__(self, work):
        super().__init__(work)
        self.ports = dict(redis=free_port(), normal=free_port(), controller=free_port())
        self.redis = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.ports["redis"]),
             "--save", "", "--appendonly", "no", "--dir", work,
             "--logfile", os.path.join(work, "redis.log")])
        self._wait_port(self.ports["redis"], 30)
        # Empty by construction (fresh process, no persistence), flushed anyway.
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.ports["redis"]),
                        "flushall"], check=True, capture_output=True)
        conf = os.path.join(work, "rspamd.conf")
        with open(conf, "w") as f:
            f.write(RSPAMD_CONF.format(w=work, **self.ports))
        # -i: allow running as root (this machine); -f: stay in foreground so
        # we own the process and can stop it.
        self.rspamd = subprocess.Popen(
            ["rspamd", "-f", "-i", "-c", conf], stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "rspamd.stderr"), "w"),
            start_new_session=True)
        self._wait_port(self.ports["normal"], 120)
        self._wait_port(self.ports["controller"], 120)
        self.learn_refused = {}

    def _wait_port(self, port, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"nothing listening on 127.0.0.1:{port} (see {self.work})")

    def _post(self, port, url, body):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            c.request("POST", url, body=body)
            r = c.getresponse()
            raw = r.read()
            try:
                return r.status, json.loads(raw or b"{}")
            except ValueError:
                # rspamd quotes the Message-ID unescaped in a refused learn's
                # JSON ("<id> has been already learned as ham"), so an id with
                # a '"' in it (trec06p has ids that are HTML links) makes the
                # reply invalid JSON: keep its text as the refusal's reason.
                if r.status == 200:
                    raise
                return r.status, {"error": raw.decode("utf-8", "replace")}
        finally:
            c.close()

    HEADERISH = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:|[ \t]")

    def _message(self, path):
        """The file's bytes, with the header/body separator restored for
        Enron-spam files: those are a `Subject:` line followed directly by the
        body, with no blank line.  rspamd's parser then takes the whole body
        for (invalid) header lines and sees an empty body: it refuses to learn
        ("less tokens than required") and never scores anything.  Other peers
        cope in their own ways (SpamAssassin, e.g., starts the body after 3
        invalid header lines), so only rspamd gets this repair."""
        with open(path, "rb") as f:
            data = f.read()
        if data.startswith(b"Subject:"):
            first, sep, rest = data.partition(b"\n")
            if sep and rest.strip(b"\r\n") and not self.HEADERISH.match(rest) \
                    and not rest.startswith((b"\n", b"\r\n")):
                eol = b"\r\n" if first.endswith(b"\r") else b"\n"
                data = first + sep + eol + rest
        return data

    def classify(self, path):
        status, res = self._post(self.ports["normal"], "/checkv2", self._message(path))
        if status != 200:
            raise RuntimeError(f"rspamd checkv2 {status} on {path}: {res}")
        syms = res.get("symbols", {})
        # rspamd inserts BAYES_SPAM (p > .5) or BAYES_HAM (p < .5) with a
        # score of weight x normalised probability, or neither (not enough
        # learns / tokens, or p ~ .5).  Map onto one spamminess axis in
        # [0,1]: .5 + spam_share/2, or .5 - ham_share/2.
        if "BAYES_SPAM" in syms:
            s = 0.5 + 0.5 * syms["BAYES_SPAM"]["score"] / 5.1
        elif "BAYES_HAM" in syms:
            s = 0.5 - 0.5 * syms["BAYES_HAM"]["score"] / -3.0
        else:
            s = 0.5
        # No Bayes symbol = no opinion: unsure, for the same reason as
        # SpamAssassin's inactive Bayes (MODE=errors must be able to start).
        return s, "spam" if s > 0.5 else "ham", s == 0.5

    def train(self, path, gold):
        status, res = self._post(self.ports["controller"],
                                 "/learnspam" if gold == "spam" else "/learnham",
                                 self._message(path))
        # Refusals are stock behaviour (already learned Message-ID, learn
        # condition "already in class" at p >= .95, too few tokens): counted,
        # not fatal.
        if status != 200 or not res.get("success"):
            # Group the reasons without the per-message parts (ids, numbers).
            # A 204 (no body) is how rspamd answers a skipped learn; its
            # reason is only in rspamd.log.
            why = re.sub(r"<[^>]*>|[0-9.]+%?", "#", str(res.get("error", f"HTTP {status}")))
            self.learn_refused[why] = self.learn_refused.get(why, 0) + 1
            return False
        return True

    def close(self):
        for why, n in sorted(self.learn_refused.items(), key=lambda kv: -kv[1]):
            sys.stderr.write(f"rspamd: {n} learn requests refused: {why}\n")
        reasons = {}
        try:
            with open(os.path.join(self.work, "rspamd.log"), errors="replace") as f:
                for line in f:
                    m = re.search(r"rspamd_task_process: skip learning: (.*)", line)
                    if m:
                        why = re.sub(r"<[^>]*>|[0-9.]+%?", "#", m.group(1))
                        reasons[why] = reasons.get(why, 0) + 1
        except OSError:
            pass
        for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            sys.stderr.write(f"rspamd.log: {n} x skip learning: {why}\n")
        for p in (self.rspamd, self.redis):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


PEERS = {"bogofilter": Bogofilter, "crm114": Crm114,
         "spamassassin": SpamAssassin, "rspamd": Rspamd}

# The click protocols: src/eval/clicks.rs has the definitions and the reasons.
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
PROFILES = {"diligent": (1.0, 1.0), "typical": (0.5, 0.2), "spam-only": (0.5, 0.0)}


def splitmix64(seed, i):
    """Output i (0-based) of the SplitMix64 generator seeded with seed."""
    z = (seed + (i + 1) * GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def draw(seed, i):
    """The uniform number in [0, 1) that decides whether message i is clicked."""
    return (splitmix64(seed, i) >> 11) / float(1 << 53)


def clicks(p, q, seed, i, gold, judged):
    """Whether the user clicks message i: spam delivered (judged ham, which
    includes bogofilter's Unsure) with chance p, ham filed as spam with
    chance q, nothing filed right."""
    if gold == "spam" and judged != "spam":
        chance = p
    elif gold == "ham" and judged == "spam":
        chance = q
    else:
        return False
    return draw(seed, i) < chance


def self_check():
    # The reference vector of SplitMix64 (seed 1234567) and the draws
    # src/eval/clicks.rs pins in `draws_are_pinned_for_the_peers_replay`.
    assert [splitmix64(1234567, i) for i in range(5)] == [
        6457827717110365317, 3203168211198807973, 9817491932198370423,
        4593380528125082431, 16408922859458223821]
    assert splitmix64(0, 0) == 0xE220A8397B1DCDAF
    for seed, i, u in [(0, 0, 0.8833108082136426), (0, 1, 0.43152799704850997),
                       (42, 0, 0.7415648787718233), (42, 999, 0.39857653722272335),
                       (MASK64, 123456, 0.7322284444924021)]:
        assert draw(seed, i) == u, (seed, i, draw(seed, i), u)
    assert not clicks(1.0, 1.0, 0, 0, "ham", "ham")
    assert not clicks(1.0, 1.0, 0, 0, "spam", "spam")
    assert clicks(1.0, 1.0, 0, 0, "spam", "ham") and clicks(1.0, 1.0, 0, 0, "ham", "spam")
    assert not clicks(0.5, 0.5, 0, 0, "spam", "ham") and clicks(0.5, 0.5, 0, 1, "spam", "ham")
    print("replay.py self-check: ok")


def parse_args():
    if sys.argv[1:] == ["--self-check"]:
        self_check()
        sys.exit(0)
    ap = argparse.ArgumentParser(
        usage="replay.py PEER INDEX MODE OUT [options]  |  replay.py --self-check",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("peer", choices=sorted(PEERS))
    ap.add_argument("index")
    ap.add_argument("mode", choices=["every", "errors", "clicks"])
    ap.add_argument("out")
    ap.add_argument("--profile", choices=sorted(PROFILES))
    ap.add_argument("--click-spam", type=float)
    ap.add_argument("--click-ham", type=float)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    click_flags = a.profile or a.click_spam is not None or a.click_ham is not None or a.seed
    if a.mode != "clicks" and click_flags:
        ap.error("--profile, --click-spam, --click-ham and --seed need MODE clicks")
    p, q = PROFILES[a.profile or "typical"]
    a.p = p if a.click_spam is None else a.click_spam
    a.q = q if a.click_ham is None else a.click_ham
    if not (0 <= a.p <= 1 and 0 <= a.q <= 1) or not 0 <= a.seed <= MASK64:
        ap.error("click probabilities are in [0, 1]; the seed in [0, 2^64)")
    return a


def main():
    a = parse_args()
    peer_name, index, mode, out = a.peer, a.index, a.mode, a.out
    base = os.path.dirname(os.path.abspath(index))
    with open(index) as f:
        items = [line.split(None, 1) for line in f if line.strip()]
    items = [(g, p.strip()) for g, p in items]
    protocol = mode if mode != "clicks" else f"clicks (p = {a.p}, q = {a.q}, seed {a.seed})"

    def feedback(i, gold, judged, unsure):
        if mode == "every":
            return True
        if mode == "errors":
            return judged != gold or unsure
        return clicks(a.p, a.q, a.seed, i, gold, judged)

    work = tempfile.mkdtemp(prefix=f"chaff-peer-{peer_name}-")
    peer = PEERS[peer_name](work)
    trained = fed = 0
    t0 = time.time()
    try:
        with open(out + ".partial", "w") as o:
            o.write(f"# replay.py {peer_name} {index}: online, train {protocol}; "
                    "id score gold judged taught\n")
            for n, (gold, rel) in enumerate(items, 1):
                path = os.path.join(base, rel)
                if isinstance(peer, Crm114):
                    # crm114 decides inside its own step whether the
                    # feedback is worth learning (thick threshold), so it has
                    # to be told up front whether feedback will come: only
                    # `every` knows before classifying; the other modes
                    # classify, then run the trainer step if fed back.
                    score, judged, unsure, did = peer.classify_and_maybe_train(
                        path, gold, feedback=(mode == "every"))
                    taught = feedback(n - 1, gold, judged, unsure)
                    if taught and mode != "every":
                        out_ = peer._run(path, gold, True)
                        did = "trained" in out_
                    trained += did
                else:
                    score, judged, unsure = peer.classify(path)
                    taught = feedback(n - 1, gold, judged, unsure)
                    if taught:
                        # "trained" counts learns the peer accepted (rspamd
                        # may refuse; the others return None = accepted).
                        trained += peer.train(path, gold) is not False
                fed += taught
                o.write(f"{rel} {score:.17g} {gold} {judged} {int(taught)}\n")
                if n % 500 == 0:
                    el = time.time() - t0
                    sys.stderr.write(f"{peer_name} {mode} {n}/{len(items)} "
                                     f"{n / el:.1f} msg/s, fed back {fed}, trained {trained}\n")
    finally:
        peer.close()
        shutil.rmtree(work, ignore_errors=True)
    el = time.time() - t0
    os.replace(out + ".partial", out)
    sys.stderr.write(f"{peer_name} {protocol} {os.path.basename(base)}: {len(items)} messages "
                     f"in {el:.1f} s = {len(items) / el:.2f} messages/s, fed back {fed}, "
                     f"trained {trained}\n")


if __name__ == "__main__":
    main()
