# Sourced by the benchmarks: starts Debian's Icecast 2.4 on loopback with a
# generated config. Usage: start_icecast PORT MAX_CLIENTS DIR ; sets ICECAST_PID.
start_icecast() {
  local port=$1 clients=$2 dir=$3
  if ! command -v icecast2 >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq icecast2 >/dev/null
  fi
  mkdir -p "$dir/log"; chmod 755 "$dir"; chmod 777 "$dir/log"
  cat > "$dir/icecast.xml" <<XML
<icecast>
  <limits>
    <clients>$clients</clients><sources>4</sources>
    <queue-size>524288</queue-size><client-timeout>30</client-timeout>
    <header-timeout>5</header-timeout><source-timeout>10</source-timeout>
    <burst-on-connect>1</burst-on-connect><burst-size>4096</burst-size>
  </limits>
  <authentication>
    <source-password>hackme</source-password>
    <admin-user>admin</admin-user><admin-password>hackme</admin-password>
  </authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>$port</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>1</fileserve>
  <paths>
    <basedir>/usr/share/icecast2</basedir><logdir>$dir/log</logdir>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>
  </paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>2</loglevel></logging>
  <security><chroot>0</chroot><changeowner><user>nobody</user><group>nogroup</group></changeowner></security>
</icecast>
XML
  icecast2 -c "$dir/icecast.xml" >"$dir/icecast.out" 2>&1 &
  ICECAST_PID=$!
  for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
    sleep 0.1
  done
  echo "icecast did not start: $(cat "$dir/icecast.out")" >&2
  return 1
}
