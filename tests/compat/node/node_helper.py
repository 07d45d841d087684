# -*- coding: utf-8 -*-
"""Python side of tests/tests/node_agent.rs: the real slapos.core 1.26.1 node agent
(`slapos node format/software/instance`) pointed at our gateway.

    python node_helper.py prepare ROOT MASTER_URL TINYSR_DIR COMPUTER
        writes ROOT/etc/slapos.cfg and ROOT/etc/def.cfg (unprivileged node, recipe of
        slapgrid-behaviour.md 8.2/8.3) and ROOT/tinysr, a copy of the tiny software
        release (harness/tinysr, which the test writes out to TINYSR_DIR) whose @TINYSR@
        placeholder names the copy; prints the software URL.
    python node_helper.py supply MASTER_URL SOFTWARE_URL COMPUTER
    python node_helper.py request MASTER_URL SOFTWARE_URL COMPUTER TITLE [STATE [SIZE]]
        requests an instance (started unless STATE says stopped or destroyed) on
        COMPUTER (of partition size SIZE, an SLA's size=); prints its partition and connection parameters as JSON ({} while not
        yet published).
    python node_helper.py full MASTER_URL COMPUTER
        prints what getFullComputerInformation tells the node, as JSON.
"""
import json
import os
import shutil
import sys

SLAPOS_CFG = """\
[slapos]
computer_id = {computer}
master_url = {url}
software_root = {root}/soft
instance_root = {root}/inst
root_check = False
pidfile_software = {root}/var/run/sw.pid
pidfile_instance = {root}/var/run/cp.pid
pidfile_report = {root}/var/run/ur.pid
shared_part_list =
  {root}/shared

[slapformat]
input_definition_file = {root}/etc/def.cfg
partition_amount = 2
alter_user = false
alter_network = false
create_tap = false
create_tun = false
computer_xml = {root}/etc/slapos.xml
computer_json = {root}/etc/slapos.json
partition_has_ipv6_range = false
"""

DEF_CFG = """\
[computer]
address = 127.0.0.1/255.255.255.255
"""

PARTITION = """
[partition_{i}]
address = 127.0.0.1/255.255.255.255 ::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff
pathname = slappart{i}
user = {user}
network_interface =
"""


def prepare(root, url, tinysr, computer):
  root = os.path.abspath(root)
  for d in ('etc', 'soft', 'inst', 'shared', 'var/run', 'var/log'):
    os.makedirs(os.path.join(root, d), exist_ok=True)
  with open(os.path.join(root, 'etc/slapos.cfg'), 'w') as f:
    f.write(SLAPOS_CFG.format(root=root, url=url.rstrip('/'), computer=computer))
  import pwd
  user = pwd.getpwuid(os.getuid()).pw_name
  with open(os.path.join(root, 'etc/def.cfg'), 'w') as f:
    f.write(DEF_CFG + ''.join(PARTITION.format(i=i, user=user) for i in range(2)))
  sr = os.path.join(root, 'tinysr')
  if os.path.exists(sr):
    shutil.rmtree(sr)
  shutil.copytree(tinysr, sr)
  # the source may be read-only: let the copy be edited and removed
  for d, dirs, files in os.walk(sr):
    for n in [d] + [os.path.join(d, f) for f in files]:
      os.chmod(n, os.stat(n).st_mode | 0o700)
  # software.cfg names its files under @TINYSR@ (buildout has no profile base location).
  path = os.path.join(sr, 'software.cfg')
  with open(path) as f:
    text = f.read()
  with open(path, 'w') as f:
    f.write(text.replace('@TINYSR@', sr))
  print(path)


def connect(url):
  import slapos.slap
  slap = slapos.slap.slap()
  slap.initializeConnection(url)
  return slap


def main(argv):
  command = argv[1]
  if command == 'prepare':
    prepare(*argv[2:6])
  elif command == 'supply':
    url, software, computer = argv[2:5]
    connect(url).registerSupply().supply(software, computer_guid=computer)
  elif command == 'request':
    url, software, computer, title = argv[2:6]
    state = argv[6] if len(argv) > 6 else 'started'
    filter_kw = {'computer_guid': computer}
    if len(argv) > 7:
      # the partition size the SLA names
      filter_kw['size'] = argv[7]
    partition = connect(url).registerOpenOrder().request(
      software, title, partition_parameter_kw={'name': title},
      filter_kw=filter_kw, state=state)
    try:
      connection = partition.getConnectionParameterDict()
    except Exception:
      connection = {}
    print(json.dumps({'partition': partition.getId(), 'connection': connection},
                     sort_keys=True))
  elif command == 'full':
    url, computer = argv[2:4]
    c = connect(url).registerComputer(computer)
    partitions = []
    for p in c.getComputerPartitionList():
      doc = getattr(p, '_software_release_document', None)
      params = getattr(p, '_parameter_dict', None) or {}
      partitions.append({
        'partition': p.getId(),
        'state': p._requested_state,
        'title': params.get('instance_title'),
        'software_release': doc.getURI() if doc is not None else None,
        'connection': getattr(p, '_connection_dict', None) or {},
      })
    print(json.dumps({
      'software': [{'url': s.getURI(), 'state': s.getState()}
                   for s in c.getSoftwareReleaseList()],
      'partitions': partitions,
    }, sort_keys=True))
  else:
    sys.exit('unknown command %r' % command)


if __name__ == '__main__':
  main(sys.argv)
