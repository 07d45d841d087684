# -*- coding: utf-8 -*-
"""What nodes and customers do that accounting sees, through the real slapos.slap client
(slapos.core 1.26.1), driven one call at a time by tests/tests/accounting.rs:

    python accounting.py      # then one JSON object per line on stdin

Each line is {"url": gateway, "action": ..., "args": [...]}; the answer is one line on
stdout: {"ok": true, "result": ...} or {"ok": false, "error": "<exception>: <message>"}.

Actions:
  format COMP PARTITIONS           updateConfiguration, as `slapos node format` posts it
  supply COMP                      supply the app release to COMP, as its provider does
  request TITLE COMP STATE         a root instance (SLA computer_guid), answers its partition
  report COMP STOP [PART=QTY ...]  reportUsage (useComputer) of a journal as `slapos node
                                   report` builds it: resource `cpu`, one movement per PART
  raw_report COMP XML              reportUsage of the given journal text
  jsonrpc METHOD BODY              POST BODY (JSON text) to URL/METHOD with requests:
                                   answers {"status": code, "body": parsed JSON}
"""
import json
import sys
import traceback

import requests

import slapos.slap
from slapos.util import dumps

SR = 'https://lab.example/software/app/software.cfg'


def computer_dict(reference, n):
  return {
    'reference': reference,
    'address': '10.0.0.1',
    'netmask': '255.255.255.0',
    'partition_list': [{
      'reference': 'slappart%d' % i,
      'address_list': [{'addr': '10.0.0.%d' % (i + 10), 'netmask': '255.255.255.0'}],
      'tap': {'name': 'slaptap%d' % i},
    } for i in range(n)],
  }


def journal(reference, stop, lines):
  """slapgrid's asXML: one transaction, the computer as reference, no start date."""
  movements = ''.join(
    '<movement><resource>cpu</resource><title>CPU</title><reference>%s</reference>'
    '<quantity>%s</quantity><price>0.0</price><VAT>None</VAT><category>None</category>'
    '</movement>' % (partition, quantity) for partition, quantity in lines)
  return (
    '<?xml version="1.0"?><journal><transaction type="Sale Packing List">'
    '<title>Resource consumptions</title><start_date></start_date>'
    '<stop_date>%s</stop_date><reference>%s</reference>'
    '<currency></currency><payment_mode></payment_mode><category></category>'
    '<arrow type="Administration"><source></source><destination></destination></arrow>'
    '%s</transaction></journal>' % (stop, reference, movements))


def run(url, action, args):
  if action == 'jsonrpc':
    method, body = args
    r = requests.post(url.rstrip('/') + '/' + method, data=body,
                      headers={'Content-Type': 'application/json'}, timeout=30)
    return {'status': r.status_code, 'body': r.json()}
  slap = slapos.slap.slap()
  slap.initializeConnection(url)
  if action == 'format':
    computer, n = args
    slap.registerComputer(computer).updateConfiguration(dumps(computer_dict(computer, int(n))))
  elif action == 'supply':
    (computer,) = args
    slap.registerSupply().supply(SR, computer_guid=computer)
  elif action == 'request':
    title, computer, state = args
    partition = slap.registerOpenOrder().request(
      SR, title, filter_kw={'computer_guid': computer}, state=state)
    return partition.getId()
  elif action == 'report':
    computer, stop = args[:2]
    lines = [line.split('=', 1) for line in args[2:]]
    slap.registerComputer(computer).reportUsage(journal(computer, stop, lines))
  elif action == 'raw_report':
    computer, xml = args
    slap.registerComputer(computer).reportUsage(xml)
  else:
    raise ValueError('unknown action %r' % action)
  return None


def main():
  for line in sys.stdin:
    call = json.loads(line)
    try:
      answer = {'ok': True, 'result': run(call['url'], call['action'], call['args'])}
    except Exception as e:
      answer = {'ok': False, 'error': '%s: %s' % (type(e).__name__, e)}
      traceback.print_exc()
    sys.stdout.write(json.dumps(answer) + '\n')
    sys.stdout.flush()


if __name__ == '__main__':
  main()
