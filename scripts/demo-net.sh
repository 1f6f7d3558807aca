#!/usr/bin/env bash
# The networking part of `make demo` (sourced by demo.sh: uses its `show`,
# `berth`, $DEMO): the default bridge, nginx behind a published port, and a
# user network where containers find each other by name.
printf '\n\033[1mNetworking\033[0m\n'
show berth run --rm busybox sh -c 'ip -4 -o addr show eth0; ip route | head -1; tail -1 /etc/hosts'

# nginx from Debian packages (examples/nginx), built once; busybox httpd
# when no Debian mirror answers.
image=nginx
if [ ! -s "$DEMO/nginx.tar" ]; then
  if command -v debootstrap >/dev/null && examples/nginx/build.sh "$DEMO/nginx.tar.part" nginx:latest; then
    mv "$DEMO/nginx.tar.part" "$DEMO/nginx.tar"
  else
    rm -f "$DEMO/nginx.tar.part"
    echo "(debootstrap could not reach a Debian mirror: serving with busybox httpd instead of nginx)"
    image=""
  fi
fi
berth rm -f web api >/dev/null 2>&1 || true
if [ -n "$image" ]; then
  show berth image import "$DEMO/nginx.tar"
  show berth run -d --name web -p 8080:80 nginx
else
  show berth run -d --name web -p 8080:80 busybox sh -c 'mkdir -p /www; echo "<h1>busybox httpd in a berth container</h1>" > /www/index.html; exec httpd -f -p 80 -h /www'
fi
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8080/ && break; sleep 0.1; done
show curl -s http://127.0.0.1:8080/
show berth port web
show berth ps --format '{{.Names}} {{.Ports}}'
show berth rm -f web

berth network rm demo-net >/dev/null 2>&1 || true
show berth network create --subnet 10.89.0.0/24 demo-net
show berth run -d --network demo-net --name api busybox sh -c 'mkdir -p /www; echo "hello from api" > /www/index.html; exec httpd -f -p 80 -h /www'
show berth run --rm --network demo-net busybox sh -c 'nslookup api | tail -2; wget -qO- http://api/'
show berth network ls
show berth rm -f api
show berth network rm demo-net
