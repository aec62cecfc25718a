#!/usr/bin/env bash
# A throwaway SMTP relay for the e-mail tests (the stand-in for a mail provider's relay):
# aiosmtpd from PyPI, in a virtualenv cached under ~/.cache/xin, on 127.0.0.1 only.
#   smtp.sh install install into the cache if missing (start does it too)
#   smtp.sh start   install if missing, start; prints the line below
#   smtp.sh stop    stop it and remove its run dir (certificates, mail, log)
#   smtp.sh url     print the line below (when running)
# Settings: XIN_SMTP_PORT (16925), XIN_SMTP_USER (xin), XIN_SMTP_PASSWORD (xin-test-smtp).
# The line: host=127.0.0.1 port=P tls_port=P+1 user=U password=PW ca=FILE maildir=DIR rundir=DIR
#   port needs STARTTLS before AUTH and MAIL; tls_port speaks implicit TLS (smtps). Both have a
#   certificate for localhost and 127.0.0.1 from a throwaway CA made at start (its PEM: ca),
#   and AUTH PLAIN/LOGIN with exactly user/password (else 535), required before MAIL.
#   Each accepted message is maildir/N.eml (the raw bytes received; N = 1, 2, ...), written
#   after maildir/N.json ({"from": .., "to": [..]}: the envelope), each atomically.
#   Faults: a file rundir/fail-next holding k makes the next k DATA get 451 4.3.0; while a
#   file rundir/reject exists, DATA gets 550 5.7.1.
set -euo pipefail
PORT=${XIN_SMTP_PORT:-16925}
TLS_PORT=$((PORT + 1))
SMTP_USER=${XIN_SMTP_USER:-xin}
SMTP_PASSWORD=${XIN_SMTP_PASSWORD:-xin-test-smtp}
AIOSMTPD_VERSION=1.4.6
TRUSTME_VERSION=1.2.1
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/xin
VENV=$CACHE/aiosmtpd-$AIOSMTPD_VERSION
RUN=${TMPDIR:-/tmp}/xin-smtp-$PORT
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
# Up when something on the port answers with an SMTP greeting.
up() { timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT && head -c3 <&3" 2>/dev/null | grep -q 220; }
line() { cat "$RUN/line"; }

install() {
  # The stamp is written last: an interrupted install is redone, not half used.
  if [ ! -f "$VENV/.installed" ]; then
    say "installing aiosmtpd $AIOSMTPD_VERSION and trustme $TRUSTME_VERSION into $VENV (pip)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check \
      "aiosmtpd==$AIOSMTPD_VERSION" "trustme==$TRUSTME_VERSION" >&2
    touch "$VENV/.installed"
  fi
}

case "${1:-}" in
  install) install ;;
  start)
    install
    if up && [ -f "$RUN/line" ]; then say "SMTP stand-in already running on 127.0.0.1:$PORT"; line; exit 0; fi
    rm -rf "$RUN"
    mkdir -p "$RUN/mail"
    cat >"$RUN/server.py" <<'PY'
# The SMTP stand-in that smtp.sh runs; all settings come from the environment.
import itertools, json, os, signal, ssl, warnings
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

run, port, tls_port = os.environ["RUN"], int(os.environ["PORT"]), int(os.environ["TLS_PORT"])
user, password = os.environ["SMTP_USER"].encode(), os.environ["SMTP_PASSWORD"].encode()
maildir = os.path.join(run, "mail")
warnings.simplefilter("ignore")  # aiosmtpd warns of AUTH without STARTTLS: the implicit-TLS port below

# A throwaway CA and a leaf for localhost / 127.0.0.1 (webpki wants a CA separate from the leaf).
ca = trustme.CA()
ca.cert_pem.write_to_path(os.path.join(run, "ca.pem"))
tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ca.issue_cert("localhost", "127.0.0.1").configure_cert(tls)

def authenticator(server, session, envelope, mechanism, auth_data):
    # PLAIN and LOGIN both hand over a LoginPassword; anything else is refused (535).
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (user, password)
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd replies 535 itself

def take_fault():
    # fail-next holds a count k: this DATA and the next k-1 get 451; the file goes at 0.
    path = os.path.join(run, "fail-next")
    if os.path.exists(path):
        k = int(open(path).read().strip() or 0)
        if k <= 1:
            os.remove(path)
        else:
            with open(path + ".tmp", "w") as f:
                f.write(str(k - 1))
            os.replace(path + ".tmp", path)
        if k >= 1:
            return "451 4.3.0 try again later"
    if os.path.exists(os.path.join(run, "reject")):
        return "550 5.7.1 rejected"
    return None

class Handler:
    # Shared by both listeners (two threads): next() on a count is atomic.
    numbers = itertools.count(1 + sum(1 for f in os.listdir(maildir) if f.endswith(".eml")))

    async def handle_DATA(self, server, session, envelope):
        fault = take_fault()
        if fault:
            return fault
        base = os.path.join(maildir, str(next(Handler.numbers)))
        # Envelope first, message last, each written to a temp file then renamed: a reader that
        # sees N.eml sees it whole, and N.json beside it.
        for ext, data in ((".json", json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos}).encode()),
                          (".eml", envelope.original_content)):
            with open(base + ext + ".tmp", "wb") as f:
                f.write(data)
            os.replace(base + ext + ".tmp", base + ext)
        return "250 2.0.0 OK"

# The implicit-TLS port first: smtp.sh waits for the STARTTLS one, so both are up by then.
# Implicit TLS: the whole connection is TLS, which aiosmtpd's auth_require_tls (it means
# "after STARTTLS") does not see, so it is off there.
auth = dict(auth_required=True, authenticator=authenticator)
Controller(Handler(), hostname="127.0.0.1", port=tls_port, ssl_context=tls,
           auth_require_tls=False, **auth).start()
Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=True,
           auth_require_tls=True, **auth).start()
print(f"listening on 127.0.0.1:{port} (STARTTLS) and 127.0.0.1:{tls_port} (implicit TLS)", flush=True)
signal.pause()  # until `smtp.sh stop` kills it (SIGTERM's default action ends the process)
PY
    RUN=$RUN PORT=$PORT TLS_PORT=$TLS_PORT SMTP_USER=$SMTP_USER SMTP_PASSWORD=$SMTP_PASSWORD \
      setsid "$VENV/bin/python" "$RUN/server.py" \
      >"$RUN/smtp.log" 2>&1 </dev/null &
    echo $! >"$RUN/pid"
    for _ in $(seq 1 100); do up && break; sleep 0.2; done
    up || { tail -20 "$RUN/smtp.log" >&2; echo "error: the SMTP stand-in did not start" >&2; exit 1; }
    echo "host=127.0.0.1 port=$PORT tls_port=$TLS_PORT user=$SMTP_USER password=$SMTP_PASSWORD ca=$RUN/ca.pem maildir=$RUN/mail rundir=$RUN" >"$RUN/line"
    say "SMTP stand-in (aiosmtpd) running on 127.0.0.1:$PORT, implicit TLS on $TLS_PORT (log $RUN/smtp.log)"
    line
    ;;
  stop)
    [ -f "$RUN/pid" ] && kill "$(cat "$RUN/pid")" 2>/dev/null || true
    rm -rf "$RUN"
    ;;
  url) up && [ -f "$RUN/line" ] || { echo "error: the SMTP stand-in is not running on port $PORT" >&2; exit 1; }; line ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
