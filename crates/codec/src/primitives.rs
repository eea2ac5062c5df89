//! Wire primitives ([MQTT-1.5]): two-byte integers, variable byte integers (at most 4 bytes,
//! minimal encoding not required on decode), UTF-8 encoded strings (valid UTF-8, no U+0000
//! [MQTT-1.5.4-2]; U+0001..U+001F and U+007F..U+009F are allowed), binary data and
//! string pairs.
