#!/usr/bin/env python3
"""The client side of `slapos bench slap`: the workload of the team's slapproxy
baseline (slapproxy_bench.py), pointed at any SLAP master URL.

Run it with the python of a virtualenv that has slapos.core==1.26.1 (the real
client library):

    $SLAPOS_VENV/bin/python chaos/bench/slap_workload.py --url http://127.0.0.1:PORT/ \
        --partitions 200 --requests 200 --calls 200 [--server-pid PID ...]

Against one FRESH master (it formats the computer), it
  * formats computer COMP-BENCH with N partitions (one updateConfiguration),
  * times min(requests, N) sequential OpenOrder.request() of distinct root
    instances (each must land on slappartNNN),
  * times `calls` getFullComputerInformation through the real client
    (Computer.getComputerPartitionList() on a new Computer object each time)
    and `calls` plain HTTP GETs of the same URL with a requests.Session,
    and the client-side unmarshalling of the body alone,
and prints one JSON document on stdout. CPU time of the server processes
(--server-pid, summed: slapproxy, or a gateway and its master replicas) is
read from /proc, as the reference script does.
"""
from __future__ import print_function

import argparse
import json
import math
import os
import statistics
import sys
import time

import requests

import slapos.slap
from slapos.util import dumps, loads

COMPUTER_ID = 'COMP-BENCH'
SR = 'https://example.com/bench/software.cfg'


def proc_cpu_s(pids):
  total = 0.0
  ticks = float(os.sysconf('SC_CLK_TCK'))
  for pid in pids:
    try:
      with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
      total += (int(fields[11]) + int(fields[12])) / ticks
    except (IOError, OSError):
      pass
  return total


class CpuMeter(object):
  def __init__(self, server_pids):
    self.server_pids = server_pids

  def __enter__(self):
    self.w0 = time.perf_counter()
    self.s0 = proc_cpu_s(self.server_pids)
    self.c0 = time.process_time()
    return self

  def __exit__(self, *exc):
    self.wall = time.perf_counter() - self.w0
    self.server_cpu = proc_cpu_s(self.server_pids) - self.s0
    self.client_cpu = time.process_time() - self.c0
    return False

  def per_call(self, n):
    return {
      'calls': n,
      'wall_total_s': round(self.wall, 4),
      'server_cpu_ms_per_call': round(self.server_cpu * 1000.0 / n, 3),
      'client_cpu_ms_per_call': round(self.client_cpu * 1000.0 / n, 3),
    }


def pct(sorted_values, p):
  if not sorted_values:
    return float('nan')
  k = max(1, int(math.ceil(p / 100.0 * len(sorted_values))))
  return sorted_values[k - 1]


def summary(samples_s):
  v = sorted(samples_s)
  ms = lambda x: round(x * 1000.0, 3)
  return {
    'n': len(v),
    'min_ms': ms(v[0]),
    'p50_ms': ms(pct(v, 50)),
    'p90_ms': ms(pct(v, 90)),
    'p99_ms': ms(pct(v, 99)),
    'max_ms': ms(v[-1]),
    'mean_ms': ms(statistics.mean(v)),
  }


def format_computer(slap, n):
  partition_list = []
  for i in range(n):
    partition_list.append({
      'reference': 'slappart%d' % i,
      'address_list': [
        {'addr': '10.%d.%d.%d' % (i // 65536, (i // 256) % 256, i % 256),
         'netmask': '255.255.255.0'},
        {'addr': '2001:db8::%x' % (i + 1), 'netmask': 'ffff:ffff:ffff:ffff::'},
      ],
      'tap': {'name': 'slaptap%d' % i},
    })
  computer_dict = {'reference': COMPUTER_ID, 'address': '10.0.0.1',
                   'netmask': '255.255.255.0', 'partition_list': partition_list}
  t0 = time.perf_counter()
  slap.registerComputer(COMPUTER_ID).updateConfiguration(dumps(computer_dict))
  return time.perf_counter() - t0


def request_instances(slap, n, server_pids):
  oo = slap.registerOpenOrder()
  lat = []
  with CpuMeter(server_pids) as meter:
    for i in range(n):
      t0 = time.perf_counter()
      cp = oo.request(SR, 'bench-%03d' % i,
                      partition_parameter_kw={'index': str(i), 'name': 'bench'},
                      software_type='default', state='started')
      lat.append(time.perf_counter() - t0)
      if cp.getId() != 'slappart%d' % i:
        raise AssertionError('request %d landed on %s' % (i, cp.getId()))
  return {
    'n': n,
    'total_s': round(meter.wall, 4),
    'per_s': round(n / meter.wall, 2),
    'latency': summary(lat),
    'cpu': meter.per_call(n),
  }


def measure_full_info(slap, url, n_calls, expected_partitions, expected_started, server_pids):
  parts = slap.registerComputer(COMPUTER_ID).getComputerPartitionList()
  started = sum(1 for p in parts if p.getState() == 'started')
  if started != expected_started:
    raise AssertionError('%d started partitions, expected %d' % (started, expected_started))

  lib = []
  with CpuMeter(server_pids) as lib_meter:
    for _ in range(n_calls):
      t0 = time.perf_counter()
      slap.registerComputer(COMPUTER_ID).getComputerPartitionList()
      lib.append(time.perf_counter() - t0)

  http_only = []
  body = b''
  session = requests.Session()
  with CpuMeter(server_pids) as http_meter:
    for _ in range(n_calls):
      t0 = time.perf_counter()
      r = session.get(url + 'getFullComputerInformation',
                      params={'computer_id': COMPUTER_ID})
      body = r.content
      http_only.append(time.perf_counter() - t0)
      if r.status_code != 200:
        raise AssertionError('getFullComputerInformation: HTTP %d' % r.status_code)

  unmarshal = []
  for _ in range(min(n_calls, 50)):
    t0 = time.perf_counter()
    loads(body)
    unmarshal.append(time.perf_counter() - t0)
  return {
    'slap_library': summary(lib),
    'slap_library_cpu': lib_meter.per_call(n_calls),
    'plain_http': summary(http_only),
    'plain_http_cpu': http_meter.per_call(n_calls),
    'client_unmarshal_only': summary(unmarshal),
    'response_bytes': len(body),
    'partitions_listed': len(parts),
  }


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--url', required=True, help='SLAP master URL (ending in /)')
  ap.add_argument('--partitions', type=int, required=True)
  ap.add_argument('--requests', type=int, default=200,
                  help='sequential instance requests (at most --partitions)')
  ap.add_argument('--calls', type=int, default=200,
                  help='getFullComputerInformation calls per way of calling')
  ap.add_argument('--server-pid', type=int, action='append', default=[],
                  help='a server process whose CPU time to count (repeatable)')
  args = ap.parse_args()
  url = args.url if args.url.endswith('/') else args.url + '/'

  slap = slapos.slap.slap()
  slap.initializeConnection(url)
  # first call: slapproxy creates its schema; keep it out of the timings
  slap.registerComputer(COMPUTER_ID).getComputerPartitionList()
  load_before = os.getloadavg()
  n_req = min(args.requests, args.partitions)
  result = {
    'partitions': args.partitions,
    'format_s': round(format_computer(slap, args.partitions), 4),
  }
  # the provider supplies the release (a master allocates only where it is supplied;
  # slapproxy does not care): the same call on both sides, outside the timings
  slap.registerSupply().supply(SR, computer_guid=COMPUTER_ID)
  result['request'] = request_instances(slap, n_req, args.server_pid)
  result['full_info'] = measure_full_info(
    slap, url, args.calls, args.partitions, n_req, args.server_pid)
  result['loadavg_before_after'] = [load_before, os.getloadavg()]
  json.dump(result, sys.stdout)
  sys.stdout.write('\n')


if __name__ == '__main__':
  main()
