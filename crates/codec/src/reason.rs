//! MQTT 5 reason codes ([MQTT-2.4]) and the MQTT 3.1.1 CONNACK return codes they map to.

/// Every MQTT 5.0 reason code. Some values have two meanings depending on the packet
/// (0x00 is Success, Normal disconnection and Granted QoS 0); the constants below give each
/// meaning its own name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReasonCode(pub u8);

#[allow(non_upper_case_globals)]
impl ReasonCode {
    pub const Success: Self = Self(0x00);
    pub const NormalDisconnection: Self = Self(0x00);
    pub const GrantedQoS0: Self = Self(0x00);
    pub const GrantedQoS1: Self = Self(0x01);
    pub const GrantedQoS2: Self = Self(0x02);
    pub const DisconnectWithWillMessage: Self = Self(0x04);
    pub const NoMatchingSubscribers: Self = Self(0x10);
    pub const NoSubscriptionExisted: Self = Self(0x11);
    pub const ContinueAuthentication: Self = Self(0x18);
    pub const ReAuthenticate: Self = Self(0x19);
    pub const UnspecifiedError: Self = Self(0x80);
    pub const MalformedPacket: Self = Self(0x81);
    pub const ProtocolError: Self = Self(0x82);
    pub const ImplementationSpecificError: Self = Self(0x83);
    pub const UnsupportedProtocolVersion: Self = Self(0x84);
    pub const ClientIdentifierNotValid: Self = Self(0x85);
    pub const BadUserNameOrPassword: Self = Self(0x86);
    pub const NotAuthorized: Self = Self(0x87);
    pub const ServerUnavailable: Self = Self(0x88);
    pub const ServerBusy: Self = Self(0x89);
    pub const Banned: Self = Self(0x8A);
    pub const ServerShuttingDown: Self = Self(0x8B);
    pub const BadAuthenticationMethod: Self = Self(0x8C);
    pub const KeepAliveTimeout: Self = Self(0x8D);
    pub const SessionTakenOver: Self = Self(0x8E);
    pub const TopicFilterInvalid: Self = Self(0x8F);
    pub const TopicNameInvalid: Self = Self(0x90);
    pub const PacketIdentifierInUse: Self = Self(0x91);
    pub const PacketIdentifierNotFound: Self = Self(0x92);
    pub const ReceiveMaximumExceeded: Self = Self(0x93);
    pub const TopicAliasInvalid: Self = Self(0x94);
    pub const PacketTooLarge: Self = Self(0x95);
    pub const MessageRateTooHigh: Self = Self(0x96);
    pub const QuotaExceeded: Self = Self(0x97);
    pub const AdministrativeAction: Self = Self(0x98);
    pub const PayloadFormatInvalid: Self = Self(0x99);
    pub const RetainNotSupported: Self = Self(0x9A);
    pub const QoSNotSupported: Self = Self(0x9B);
    pub const UseAnotherServer: Self = Self(0x9C);
    pub const ServerMoved: Self = Self(0x9D);
    pub const SharedSubscriptionsNotSupported: Self = Self(0x9E);
    pub const ConnectionRateExceeded: Self = Self(0x9F);
    pub const MaximumConnectTime: Self = Self(0xA0);
    pub const SubscriptionIdentifiersNotSupported: Self = Self(0xA1);
    pub const WildcardSubscriptionsNotSupported: Self = Self(0xA2);

    /// True for codes 0x80 and above ([MQTT-2.4]: "failure").
    pub const fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// The MQTT 3.1/3.1.1 CONNACK return code ([MQTT-3.2.2.3]) closest to this v5 reason.
    pub const fn to_v3_connack(self) -> u8 {
        match self.0 {
            0x00 => 0,
            0x84 => 1,        // unacceptable protocol version
            0x85 => 2,        // identifier rejected
            0x88 | 0x89 => 3, // server unavailable
            0x86 | 0x8C => 4, // bad user name or password
            _ => 5,           // not authorized
        }
    }
}
