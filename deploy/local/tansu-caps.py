# What tansu 0.6.0 answers for discovery and group coordination (crossprobe #17).
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
print("groups:", admin.list_consumer_groups())
c.close()
