#!/usr/bin/env python3
# What tansu 0.6.0 answers for discovery and group coordination (crossprobe #17): the brokers
# and their racks (DescribeCluster), a topic's leaders, replicas and ISR, and a consumer group's
# join, fetch and offset commit read back. Run against a zone's plain Kafka port:
#   pip install kafka-python   # 3.0.12 checked
#   python3 deploy/local/tansu-caps.py 127.0.0.1:19092
# Seen on tansu 0.6.0: one broker, id 111, rack None; leader 111, replicas [111], ISR [111];
# the group joins, fetches, commits and reads its offset back. So discovery, ISR export and the
# group stage are verified against tansu, while several brokers in one cluster, leadership
# moves and a coordinator apart from the broker cannot be (README, "Discovery and the group
# stage").
import sys, time
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
boot = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=boot, client_id="caps")
cluster = admin.describe_cluster()
print("describe_cluster:", {k: cluster[k] for k in ("cluster_id", "controller_id")}, "brokers:", cluster["brokers"])
topic = "caps-%d" % int(time.time())
from kafka.admin import NewTopic
admin.create_topics([NewTopic(topic, 3, 1)])
time.sleep(1)
p = KafkaProducer(bootstrap_servers=boot)
p.send(topic, b"x").get(timeout=10); p.flush()
md = admin.describe_topics([topic])
print("topic partitions:", md[0]["partitions"])
c = KafkaConsumer(bootstrap_servers=boot, group_id="caps-group-"+topic, enable_auto_commit=False, auto_offset_reset="earliest")
c.subscribe([topic])
msgs = c.poll(timeout_ms=10000)
print("group join + fetch:", sum(len(v) for v in msgs.values()), "messages; assignment", c.assignment())
tp = TopicPartition(topic, 0)
c.commit({tp: OffsetAndMetadata(1, None, -1)})
print("committed offset read back:", c.committed(tp))
c.close()
