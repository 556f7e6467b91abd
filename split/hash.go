package split

// FNV-1a 32-bit parameters (http://www.isthe.com/chongo/tech/comp/fnv/).
const (
	fnvOffset32 = 2166136261
	fnvPrime32  = 16777619
)

// Bucket returns the bucket (0..Buckets-1) of key under name: FNV-1a-32 of
// the bytes of name + ":" + key, modulo Buckets. name is the service name
// for sticky routing and the experiment name for experiments. This function
// is part of the compatibility contract: changing it moves users.
func Bucket(name, key string) int { return bucketOf(name, ":", key) }

// MirrorBucket returns the bucket that decides whether a keyed request of
// service is mirrored: FNV-1a-32 of service + ":mirror:" + key, modulo
// Buckets; the request is copied when it is below the mirror's share in
// basis points. It is independent of the routing bucket, so the copied
// users are spread over every version's users.
func MirrorBucket(service, key string) int { return bucketOf(service+":mirror:", "", key) }

// bucketOf is FNV-1a-32 of name + sep + key, modulo Buckets.
func bucketOf[T text](name, sep string, key T) int {
	h := uint32(fnvOffset32)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= fnvPrime32
	}
	for i := 0; i < len(sep); i++ {
		h ^= uint32(sep[i])
		h *= fnvPrime32
	}
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= fnvPrime32
	}
	return int(h % Buckets)
}
