#!/bin/sh
# Installs, when missing, the real engines the tests and benchmarks talk to, from
# Debian packages. Run by `make engines` (and so by .ci/run) as root. Does nothing
# but a few dpkg-query calls when everything is present. No daemon is left
# running afterwards: tests and benchmarks start their own private instances with
# temporary configs on loopback ports.
set -eu

# Debian packages the suite and `make bench` use, and what each gives:
#   postfix          smtp-source, smtp-sink and the Postfix peer (bench, interop tests)
#   swaks            scripted SMTP client for interop tests
#   slapd ldap-utils OpenLDAP server and clients (LDAP directory tests)
#   dovecot-*        IMAP, POP3 and LMTP peers (mailbox and LMTP tests)
#   haproxy          PROXY protocol peer
#   chromium chromium-driver   headless browser for the web UI tests
#   fetchmail        POP3 client for the POP3 server tests
#   systemd          systemd-analyze, to check the shipped unit files, and
#                    systemd-socket-activate, to test socket activation
#   logrotate        to check the shipped logrotate snippet
#   util-linux       unshare, to give the scale-out test's Postfix a resolv.conf of its own
PACKAGES="postfix swaks slapd ldap-utils dovecot-core dovecot-imapd dovecot-pop3d
dovecot-lmtpd haproxy chromium chromium-driver fetchmail systemd logrotate util-linux"

# The daemons a Debian postinst may start, with how to stop each one.
DAEMONS="postfix slapd dovecot haproxy"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "engines: all present"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "engines: missing Debian packages:$missing"
    echo "engines: run 'make engines' as root, or: apt-get install$missing"
    exit 1
fi

echo "engines: installing$missing"
export DEBIAN_FRONTEND=noninteractive

# Postfix with "No configuration" writes no main.cf and starts nothing; slapd
# without a configuration creates no database. Tests bring their own configs.
debconf-set-selections <<'SEL'
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string localhost
slapd slapd/no_configuration boolean true
SEL

# Keep postinst scripts from starting daemons (invoke-rc.d asks policy-rc.d;
# 101 = action forbidden). An existing policy-rc.d is left as it was.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=yes
fi
cleanup() {
    if [ -n "$made_policy" ]; then rm -f "$policy"; fi
}
trap cleanup EXIT INT TERM

apt-get update -q
apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $missing

# Belt and braces: stop any daemon that started anyway (e.g. where no
# policy-rc.d is honoured). Only the system instances, by their own tools.
for d in $DAEMONS; do
    case "$d" in
        postfix)
            if command -v postfix >/dev/null && postfix status >/dev/null 2>&1; then
                postfix stop || true
            fi ;;
        *)
            if [ -x "/etc/init.d/$d" ] && "/etc/init.d/$d" status >/dev/null 2>&1; then
                "/etc/init.d/$d" stop || true
            fi ;;
    esac
done
echo "engines: installed$missing"
