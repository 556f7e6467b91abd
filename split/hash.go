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
func Bucket(name, key string) int {
	h := uint32(fnvOffset32)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= fnvPrime32
	}
	h ^= ':'
	h *= fnvPrime32
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= fnvPrime32
	}
	return int(h % Buckets)
}
