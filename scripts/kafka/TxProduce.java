// TxProduce writes records with Kafka's own Java producer, in transactions
// that it commits or aborts as told: kafka-go cannot produce transactionally,
// and the tests of read_committed ingestion need aborted transactions
// written exactly as Kafka Streams or Flink write them.
//
// Run with the broker's jars (Java 11+ runs a single source file):
//   java -cp "$KAFKA_LIBS/*" scripts/kafka/TxProduce.java BROKERS TOPIC < commands
//
// Commands, one per line, fields separated by spaces:
//   begin P              producer P (transactional.id P, made on first use) begins a transaction
//   send P PART PREFIX N  P sends N JSON records {"id":"PREFIX-i","text":...} to partition PART
//                        (P "-": a plain producer, no transaction) and flushes them
//   commit P | abort P   ends P's transaction
//   close P              closes P without ending its transaction (left open)
// It prints "ok" after each command, so a caller can pace it.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

public class TxProduce {
    public static void main(String[] args) throws Exception {
        String brokers = args[0], topic = args[1];
        Map<String, KafkaProducer<String, String>> producers = new HashMap<>();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        for (String line; (line = in.readLine()) != null; ) {
            String[] f = line.trim().split(" +");
            if (f.length < 2) continue;
            String name = f[1];
            KafkaProducer<String, String> p = producers.get(name);
            if (p == null) {
                Properties props = new Properties();
                props.put("bootstrap.servers", brokers);
                props.put("key.serializer", StringSerializer.class.getName());
                props.put("value.serializer", StringSerializer.class.getName());
                props.put("linger.ms", "5");
                if (!name.equals("-")) {
                    props.put("transactional.id", name);
                    props.put("transaction.timeout.ms", "60000");
                }
                p = new KafkaProducer<>(props);
                if (!name.equals("-")) p.initTransactions();
                producers.put(name, p);
            }
            switch (f[0]) {
                case "begin": p.beginTransaction(); break;
                case "send": {
                    int part = Integer.parseInt(f[2]), n = Integer.parseInt(f[4]);
                    for (int i = 0; i < n; i++) {
                        String id = f[3] + "-" + i;
                        String text = "Record " + i + " of " + f[3] + ", written by producer " + name
                            + ": the quick brown fox jumps over the lazy dog " + (i * 7919 % 1000) + " times.";
                        p.send(new ProducerRecord<>(topic, part, id, "{\"id\":\"" + id + "\",\"text\":\"" + text + "\"}"));
                    }
                    p.flush();
                    break;
                }
                case "commit": p.commitTransaction(); break;
                case "abort": p.abortTransaction(); break;
                case "close": p.close(java.time.Duration.ZERO); producers.remove(name); break;
                default: throw new IllegalArgumentException("unknown command: " + line);
            }
            System.out.println("ok");
            System.out.flush();
        }
        for (KafkaProducer<String, String> p : producers.values()) p.close();
    }
}
